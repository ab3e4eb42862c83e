//! `KmsHost` end to end: client engine ⇄ host engine ⇄ policy, in memory, on
//! a stepped clock; and every rule of the policy on its own.

use std::net::SocketAddr;
use std::time::Duration;

use kms_activation::client::{ClientConfig, ClientConnection, ClientEvent};
use kms_activation::host::store::{CountStore, MemoryStore, StoreError, Tally, Visit};
use kms_activation::host::{
    ActivationRecord, AnswerError, CidrAllowList, CountPolicy, DecisionHook, HostConfig,
    HostConnection, HostEvent, KmsHost, KmsHostConfig, KmsHostError, MaxClients, ProductAllowList,
    RejectReason, RequestContext,
};
use kms_activation::message::{RequestBody, Version};
use kms_activation::{FileTime, HResult, LicenseStatus, ScriptedRandom, Uuid, product};

const T0: u64 = 134_397_882_570_000_000;
const MINUTE: u64 = 60 * 10_000_000;
const DAY: u64 = 1440 * MINUTE;

const WINDOWS: &str = "55c92734-d682-4d71-983e-d6ec3f16059f";
const OFFICE_2013: &str = "0ff1ce15-a989-479d-af46-f275c6370663";
/// Windows 10/11 client KMS ID (N 25) and Windows 10 Enterprise.
const WIN_CLIENT_KMS: &str = "58e2134f-8e11-4d17-9cb2-91069c151148";
const WIN10_ENT: &str = "73111121-5638-40f6-bc11-f1d7b0d64300";
/// Office LTSC 2021 KMS ID (N 5) and Office LTSC Professional Plus 2021.
const OFFICE_2021_KMS: &str = "86d50b16-4808-41af-b83b-b338274318b2";
const OFFICE_2021_PROPLUS: &str = "fbdb3e18-a8ef-4fb3-9183-dffd60bd0984";

fn id(s: &str) -> Uuid {
    s.parse().unwrap()
}

fn rng() -> ScriptedRandom {
    ScriptedRandom::new((0..=255u8).cycle().take(8192).collect::<Vec<_>>())
}

fn start(config: KmsHostConfig) -> KmsHost<MemoryStore> {
    pollster::block_on(KmsHost::start(
        config,
        MemoryStore::default(),
        FileTime::from_ticks(T0),
        &mut rng(),
    ))
    .unwrap()
}

fn windows_request(cmid: u128, at: u64) -> RequestBody {
    RequestBody {
        version: Version::V6,
        vm_info: 0,
        license_status: LicenseStatus::OobGrace,
        binding_expiration: 43_200,
        application_id: id(WINDOWS),
        sku_id: id(WIN10_ENT),
        kms_id: id(WIN_CLIENT_KMS),
        cmid: Uuid::from_u128(cmid),
        previous_cmid: Uuid::nil(),
        n_policy: 25,
        client_time: FileTime::from_ticks(at),
        workstation: format!("pc{cmid}.example.org"),
    }
}

fn office_request(cmid: u128, at: u64) -> RequestBody {
    RequestBody {
        application_id: id(OFFICE_2013),
        sku_id: id(OFFICE_2021_PROPLUS),
        kms_id: id(OFFICE_2021_KMS),
        n_policy: 5,
        ..windows_request(cmid, at)
    }
}

/// The outcome of one activation as the client engine saw it.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Count(u32),
    Refused(HResult),
}

/// A full connection: bind, one request, its verified response. Returns the
/// client's view and the host's records.
fn activate<S: CountStore>(
    host: &KmsHost<S>,
    config: &HostConfig,
    peer: Option<SocketAddr>,
    request: RequestBody,
    at: u64,
) -> (Outcome, Vec<ActivationRecord>) {
    let now = FileTime::from_ticks(at);
    let mut rng = rng();
    let mut client_config = ClientConfig::default();
    client_config.set_ndr64(request.version != Version::V4);
    let mut client = ClientConnection::new(&client_config);
    client.send_request(request, &mut rng).unwrap();
    let mut conn = HostConnection::new(config);
    if let Some(peer) = peer {
        conn = conn.with_peer(peer);
    }
    let mut records = Vec::new();
    for _ in 0..8 {
        let to_host = client.transmit().to_vec();
        client.advance_transmit(to_host.len());
        let used = conn.handle_input(now, &to_host, &mut rng).unwrap();
        assert_eq!(used, to_host.len());
        records.extend(host.process_blocking(&mut conn, &mut rng));
        let to_client = conn.transmit().to_vec();
        conn.advance_transmit(to_client.len());
        assert_eq!(
            client.handle_input(&to_client, &mut rng).unwrap(),
            to_client.len()
        );
        while let Some(event) = client.poll_event() {
            match event {
                ClientEvent::Answered(response) => {
                    return (Outcome::Count(response.body.count), records);
                }
                ClientEvent::Refused(hresult) => return (Outcome::Refused(hresult), records),
                _ => {}
            }
        }
    }
    panic!("no answer after 8 round trips");
}

fn ask<S: CountStore>(host: &KmsHost<S>, request: RequestBody, at: u64) -> Outcome {
    activate(host, &HostConfig::default(), None, request, at).0
}

#[test]
fn every_catalog_sku_and_version_against_a_genuine_host() {
    let host = start(KmsHostConfig::default());
    let mut activated = 0;
    let mut refused = 0;
    let mut at = T0;
    for (index, sku) in product::skus().iter().enumerate() {
        let Some(item) = sku.kms_item() else {
            continue;
        };
        for version in [Version::V4, Version::V5, Version::V6] {
            at += MINUTE;
            let request = RequestBody {
                version,
                application_id: item.application_id(),
                sku_id: sku.id(),
                kms_id: item.id(),
                n_policy: item.n_count_policy(),
                ..windows_request(index as u128 + 1, at)
            };
            let expected_key = product::csvlks()
                .iter()
                .filter(|c| c.id().is_some() && c.group_id().is_some() && c.key_ids().is_some())
                .any(|c| c.activates(item.id()))
                && !item.is_retail()
                && !item.is_preview();
            match ask(&host, request, at) {
                Outcome::Count(count) => {
                    assert!(expected_key, "{} activated without a CSVLK", sku.name());
                    assert!(count >= 1);
                    let epid = host.epid_for(item.id()).unwrap();
                    let parsed = kms_activation::Epid::parse(epid).unwrap();
                    assert!(
                        parsed.can_activate(item.id()),
                        "{}: ePID {epid}",
                        sku.name()
                    );
                    activated += 1;
                }
                Outcome::Refused(hresult) => {
                    assert!(!expected_key, "{} {version} refused {hresult}", sku.name());
                    assert_eq!(hresult, HResult::KMS_ID_MISMATCH);
                    refused += 1;
                }
            }
        }
    }
    assert!(activated > 600, "only {activated} activations");
    assert!(refused > 0, "no SKU outside the CSVLKs");
}

#[test]
fn count_rises_to_the_threshold_exactly_at_n() {
    let host = start(KmsHostConfig::default());
    let mut at = T0;
    for cmid in 1..=30u32 {
        at += MINUTE;
        let Outcome::Count(count) = ask(&host, windows_request(cmid.into(), at), at) else {
            panic!("refused");
        };
        assert_eq!(count, cmid, "Windows client {cmid}");
        // The client's own verdict: activated once count ≥ N (25).
        assert_eq!(count >= 25, cmid >= 25);
    }
    for cmid in 1..=6u32 {
        at += MINUTE;
        let Outcome::Count(count) = ask(&host, office_request(1000 + u128::from(cmid), at), at)
        else {
            panic!("refused");
        };
        // Office counts apart from Windows.
        assert_eq!(count, cmid, "Office client {cmid}");
        assert_eq!(count >= 5, cmid >= 5);
    }
    // A repeat CMID does not count twice.
    assert_eq!(ask(&host, windows_request(3, at), at), Outcome::Count(30));
    let stats = pollster::block_on(host.statistics(FileTime::from_ticks(at))).unwrap();
    assert_eq!(stats.total_requests, 37);
    assert_eq!(stats.failed_requests, 0);
    assert_eq!(stats.requests_by_license_status[2], 37);
    let windows = stats
        .counts
        .iter()
        .find(|c| c.application_id == id(WINDOWS))
        .unwrap();
    assert_eq!((windows.clients, windows.current_count), (30, 30));
    assert_eq!(windows.name(), Some("Windows"));
}

#[test]
fn count_is_capped_at_twice_the_largest_n_policy() {
    let host = start(KmsHostConfig::default());
    let mut at = T0;
    let mut last = 0;
    for cmid in 1..=60u32 {
        at += MINUTE;
        let Outcome::Count(count) = ask(&host, windows_request(cmid.into(), at), at) else {
            panic!("refused");
        };
        last = count;
    }
    assert_eq!(last, 50);
    // Office: N 5 → at most 10.
    for cmid in 1..=12u128 {
        at += MINUTE;
        if let Outcome::Count(count) = ask(&host, office_request(500 + cmid, at), at) {
            last = count;
        }
    }
    assert_eq!(last, 10);
}

#[test]
fn clients_age_out_after_thirty_days() {
    let host = start(KmsHostConfig::default());
    assert_eq!(ask(&host, windows_request(1, T0), T0), Outcome::Count(1));
    let almost = T0 + 30 * DAY - MINUTE;
    assert_eq!(
        ask(&host, windows_request(2, almost), almost),
        Outcome::Count(2)
    );
    let later = T0 + 30 * DAY + MINUTE;
    // Client 1 has aged out; client 2 still counts.
    assert_eq!(
        ask(&host, windows_request(3, later), later),
        Outcome::Count(2)
    );
}

#[test]
fn a_replaced_cmid_counts_as_a_new_client_until_the_old_one_ages_out() {
    let host = start(KmsHostConfig::default());
    assert_eq!(ask(&host, windows_request(1, T0), T0), Outcome::Count(1));
    let mut rearmed = windows_request(2, T0 + MINUTE);
    rearmed.previous_cmid = Uuid::from_u128(1);
    assert_eq!(ask(&host, rearmed.clone(), T0 + MINUTE), Outcome::Count(2));
    let later = T0 + 31 * DAY;
    rearmed.client_time = FileTime::from_ticks(later);
    assert_eq!(ask(&host, rearmed, later), Outcome::Count(1));
}

#[test]
fn cloned_machines_sharing_a_cmid_count_once() {
    let host = start(KmsHostConfig::default());
    for clone in 0..10u64 {
        let at = T0 + clone * MINUTE;
        let mut request = windows_request(42, at);
        request.workstation = format!("clone{clone}");
        assert_eq!(ask(&host, request, at), Outcome::Count(1));
    }
}

#[test]
fn kms_ids_outside_the_held_csvlks_are_refused() {
    let host = start(KmsHostConfig::default());
    let mut request = windows_request(1, T0);
    request.kms_id = Uuid::from_u128(0x1234);
    assert_eq!(
        ask(&host, request, T0),
        Outcome::Refused(HResult::KMS_ID_MISMATCH)
    );
    // An Office KMS ID under the Windows application ID.
    let mut request = windows_request(1, T0);
    request.kms_id = id(OFFICE_2021_KMS);
    assert_eq!(
        ask(&host, request, T0),
        Outcome::Refused(HResult::KMS_ID_MISMATCH)
    );

    // A host holding only the Windows Server 2022 CSVLK activates Windows
    // 10/11 clients (an older Windows product) but not Office.
    let mut config = KmsHostConfig::default();
    config.set_csvlks([id("661f7658-7035-4b4c-9f35-010682943ec2")]);
    let host = start(config);
    assert_eq!(ask(&host, windows_request(1, T0), T0), Outcome::Count(1));
    assert_eq!(
        ask(&host, office_request(1, T0), T0),
        Outcome::Refused(HResult::KMS_ID_MISMATCH)
    );

    // A host holding only the Office LTSC 2021 CSVLK refuses Windows.
    let office_2021_csvlk = product::csvlk_for_kms(id(OFFICE_2021_KMS)).unwrap();
    let mut config = KmsHostConfig::default();
    config.set_csvlks([office_2021_csvlk.id().unwrap()]);
    let host = start(config);
    assert_eq!(
        ask(&host, windows_request(1, T0), T0),
        Outcome::Refused(HResult::KMS_ID_MISMATCH)
    );
    assert_eq!(ask(&host, office_request(1, T0), T0), Outcome::Count(1));
}

#[test]
fn unaccepted_versions_are_refused() {
    let mut config = KmsHostConfig::default();
    config.set_versions([Version::V6]);
    let host = start(config);
    let mut request = windows_request(1, T0);
    request.version = Version::V5;
    assert_eq!(
        ask(&host, request, T0),
        Outcome::Refused(HResult::INVALID_DATA)
    );
    assert_eq!(ask(&host, windows_request(1, T0), T0), Outcome::Count(1));
}

#[test]
fn fixed_count_modes_are_opt_in() {
    let mut config = KmsHostConfig::default();
    config.set_count_policy(CountPolicy::Fixed(7));
    let host = start(config);
    assert_eq!(ask(&host, windows_request(1, T0), T0), Outcome::Count(7));
    let mut config = KmsHostConfig::default();
    config.set_count_policy(CountPolicy::TwiceNPolicy);
    let host = start(config);
    assert_eq!(ask(&host, office_request(1, T0), T0), Outcome::Count(10));
    assert!(host.store().is_empty(), "fixed modes record no clients");
}

#[test]
fn engine_refuses_clock_skew_beyond_the_window() {
    let host = start(KmsHostConfig::default());
    let four_hours = 240 * MINUTE;
    // Exactly 4 h off either way is accepted; one second more is refused.
    for client in [T0 - four_hours, T0 + four_hours] {
        assert_eq!(
            ask(&host, windows_request(1, client), T0),
            Outcome::Count(1)
        );
    }
    let (outcome, records) = activate(
        &host,
        &HostConfig::default(),
        None,
        windows_request(2, T0 + four_hours + 10_000_000),
        T0,
    );
    assert_eq!(outcome, Outcome::Refused(HResult::INVALID_TIMESTAMP));
    assert_eq!(records.len(), 1, "the rejection is logged");
    assert_eq!(records[0].result, HResult::INVALID_TIMESTAMP);
    // Switched off, any clock is accepted.
    let mut config = HostConfig::default();
    config.set_max_clock_skew(None);
    let (outcome, _) = activate(&host, &config, None, windows_request(2, T0 + 400 * DAY), T0);
    assert_eq!(outcome, Outcome::Count(2));
}

#[test]
fn engine_refuses_n_policy_above_1000() {
    let host = start(KmsHostConfig::default());
    let mut request = windows_request(1, T0);
    request.n_policy = 1001;
    assert_eq!(
        ask(&host, request.clone(), T0),
        Outcome::Refused(HResult::INVALID_DATA)
    );
    request.n_policy = 1000;
    assert_eq!(ask(&host, request, T0), Outcome::Count(1));
}

#[test]
fn cidr_allow_list_admits_listed_networks_only() {
    let list: CidrAllowList = "10.0.0.0/8 ::1".parse().unwrap();
    let host = start(KmsHostConfig::default()).with_hook(list);
    let config = HostConfig::default();
    let inside: SocketAddr = "10.2.3.4:50000".parse().unwrap();
    let outside: SocketAddr = "192.0.2.1:50000".parse().unwrap();
    let mapped: SocketAddr = "[::ffff:10.9.9.9]:1".parse().unwrap();
    let ok = |peer| activate(&host, &config, Some(peer), windows_request(1, T0), T0).0;
    assert_eq!(ok(inside), Outcome::Count(1));
    assert_eq!(ok(mapped), Outcome::Count(1));
    assert_eq!(ok("[::1]:1".parse().unwrap()), Outcome::Count(1));
    assert_eq!(ok(outside), Outcome::Refused(HResult::ACCESS_DENIED));
    // No peer known: refused.
    assert_eq!(
        activate(&host, &config, None, windows_request(1, T0), T0).0,
        Outcome::Refused(HResult::ACCESS_DENIED)
    );
}

#[test]
fn product_allow_list_and_max_clients() {
    let host = start(KmsHostConfig::default())
        .with_hook(ProductAllowList::default().with_kms_id(id(WIN_CLIENT_KMS)))
        .with_hook(MaxClients(2));
    assert_eq!(
        ask(&host, office_request(1, T0), T0),
        Outcome::Refused(HResult::KMS_ID_MISMATCH)
    );
    assert_eq!(ask(&host, windows_request(1, T0), T0), Outcome::Count(1));
    assert_eq!(ask(&host, windows_request(2, T0), T0), Outcome::Count(2));
    assert_eq!(
        ask(&host, windows_request(3, T0), T0),
        Outcome::Refused(HResult::CLIENT_TABLE_FULL)
    );
    // Known clients keep renewing.
    assert_eq!(ask(&host, windows_request(1, T0), T0), Outcome::Count(2));
}

#[test]
fn hooks_can_adjust_the_answer() {
    struct ShortRetry;
    impl DecisionHook for ShortRetry {
        fn adjust(
            &self,
            _: &RequestContext,
            _: &RequestBody,
            answer: &mut kms_activation::host::Answer,
        ) {
            answer.activation_interval = 15;
        }
    }
    let host = start(KmsHostConfig::default()).with_hook(ShortRetry);
    let event = request_event(windows_request(1, T0));
    let decision = pollster::block_on(host.decide(&event));
    assert_eq!(decision.reply.unwrap().activation_interval, 15);
}

/// A store that fails every write, as a database that went away.
struct BrokenStore;

impl CountStore for BrokenStore {
    async fn record_visit(&self, _: Visit) -> Result<Tally, StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
    async fn tally(&self, _: Uuid, _: FileTime) -> Result<Tally, StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
    async fn append_activation(&self, _: &ActivationRecord, _: FileTime) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
    async fn recent_activations(&self, _: usize) -> Result<Vec<ActivationRecord>, StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
    async fn host_epid(&self, _: Uuid, candidate: &str) -> Result<String, StoreError> {
        Ok(candidate.to_owned())
    }
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[test]
fn a_failing_store_refuses_rather_than_guess() {
    let host = pollster::block_on(KmsHost::start(
        KmsHostConfig::default(),
        BrokenStore,
        FileTime::from_ticks(T0),
        &mut rng(),
    ))
    .unwrap();
    assert_eq!(
        ask(&host, windows_request(1, T0), T0),
        Outcome::Refused(HResult::BINDING_SERVICE_NOT_ENABLED)
    );
}

/// A host connection that has received `body` from a real client engine,
/// with the first event it reported.
fn connection_with_event(body: RequestBody) -> (HostConnection, HostEvent) {
    let mut rng = rng();
    let mut client = ClientConnection::new(&ClientConfig::default());
    client.send_request(body, &mut rng).unwrap();
    let mut conn = HostConnection::new(&HostConfig::default());
    for _ in 0..4 {
        let bytes = client.transmit().to_vec();
        client.advance_transmit(bytes.len());
        conn.handle_input(FileTime::from_ticks(T0), &bytes, &mut rng)
            .unwrap();
        if let Some(event) = conn.poll_event() {
            return (conn, event);
        }
        let back = conn.transmit().to_vec();
        conn.advance_transmit(back.len());
        client.handle_input(&back, &mut rng).unwrap();
    }
    panic!("no event");
}

fn request_event(body: RequestBody) -> kms_activation::host::RequestEvent {
    match connection_with_event(body).1 {
        HostEvent::Request(request) => request,
        other => panic!("not a request: {other:?}"),
    }
}

#[test]
fn activation_records_carry_the_event_12290_fields() {
    let host = start(KmsHostConfig::default());
    let peer: SocketAddr = "192.0.2.7:49152".parse().unwrap();
    let mut request = windows_request(9, T0);
    request.vm_info = 1;
    request.license_status = LicenseStatus::Licensed;
    request.binding_expiration = 250_000;
    let (_, records) = activate(
        &host,
        &HostConfig::default(),
        Some(peer),
        request.clone(),
        T0,
    );
    let record = &records[0];
    assert_eq!(record.peer, Some(peer));
    assert_eq!(record.n_policy, 25);
    assert_eq!(record.workstation, request.workstation);
    assert_eq!(record.cmid, request.cmid);
    assert_eq!(record.client_time, request.client_time);
    assert!(record.virtual_machine);
    assert_eq!(record.license_status, LicenseStatus::Licensed);
    assert_eq!(record.minutes_to_expiry, 250_000);
    assert_eq!(record.sku_id, id(WIN10_ENT));
    assert_eq!(record.sku_name(), Some("Windows 10/11 Enterprise"));
    assert_eq!((record.count, record.result), (Some(1), HResult::S_OK));
    let logged = pollster::block_on(host.store().recent_activations(10)).unwrap();
    assert_eq!(logged, records);
}

#[test]
fn configuration_is_validated_at_start() {
    let start_with = |config: KmsHostConfig| {
        pollster::block_on(KmsHost::start(
            config,
            MemoryStore::default(),
            FileTime::from_ticks(T0),
            &mut rng(),
        ))
    };
    let mut config = KmsHostConfig::default();
    config.add_epid("not an epid");
    assert!(matches!(
        start_with(config),
        Err(KmsHostError::BadEpid { .. })
    ));
    // A Server 2019 ePID on a host holding only the Office LTSC 2021 CSVLK.
    let mut config = KmsHostConfig::default();
    config
        .set_csvlks([product::csvlk_for_kms(id(OFFICE_2021_KMS))
            .unwrap()
            .id()
            .unwrap()])
        .add_epid("05426-00206-565-184251-03-1068-9200.0000-1222025");
    assert!(matches!(
        start_with(config),
        Err(KmsHostError::EpidForNoHeldCsvlk { .. })
    ));
    // Platform id 03612 does not match build 9200.
    let mut config = KmsHostConfig::default();
    config.add_epid("03612-00206-565-184251-03-1068-9200.0000-1222025");
    assert!(matches!(
        start_with(config),
        Err(KmsHostError::ImplausibleEpid { .. })
    ));
    let mut config = KmsHostConfig::default();
    config.set_csvlks([Uuid::from_u128(5)]);
    assert!(matches!(
        start_with(config),
        Err(KmsHostError::UnknownCsvlk(_))
    ));
    // A valid given ePID is used for its CSVLK.
    let mut config = KmsHostConfig::default();
    config.add_epid("05426-00206-565-184251-03-1068-9200.0000-1222025");
    let host = start_with(config).unwrap();
    let server_2019 = id("2e7a9ad1-a849-4b56-babe-17d5a29fe4b4");
    let (_, epid) = host
        .epids()
        .find(|(c, _)| c.id() == Some(server_2019))
        .unwrap();
    assert_eq!(epid, "05426-00206-565-184251-03-1068-9200.0000-1222025");
}

#[test]
fn generated_epids_are_plausible_and_kept_in_the_store() {
    let store = std::sync::Arc::new(MemoryStore::default());
    let first = pollster::block_on(KmsHost::start(
        KmsHostConfig::default(),
        store.clone(),
        FileTime::from_ticks(T0),
        &mut ScriptedRandom::new([1u8; 8192]),
    ))
    .unwrap();
    let today = FileTime::from_ticks(T0).to_datetime().unwrap();
    let mut count = 0;
    for (csvlk, epid) in first.epids() {
        let parsed = kms_activation::Epid::parse(epid).unwrap();
        assert_eq!(
            parsed.problems_for(csvlk, today),
            vec![],
            "{}",
            csvlk.name()
        );
        count += 1;
    }
    assert!(count >= 40, "{count} CSVLKs held");
    // A restart with other randomness keeps the stored ePIDs.
    let second = pollster::block_on(KmsHost::start(
        KmsHostConfig::default(),
        store,
        FileTime::from_ticks(T0 + DAY),
        &mut ScriptedRandom::new([2u8; 8192]),
    ))
    .unwrap();
    let a: Vec<_> = first.epids().map(|(_, e)| e.to_owned()).collect();
    let b: Vec<_> = second.epids().map(|(_, e)| e.to_owned()).collect();
    assert_eq!(a, b);
}

#[test]
fn answers_the_wire_cannot_carry_are_errors_for_the_embedder() {
    let (mut conn, event) = connection_with_event(windows_request(1, T0));
    let HostEvent::Request(request) = event else {
        panic!("not a request")
    };
    let id = request.id;
    let mut rng = rng();
    let answer =
        |epid: String| kms_activation::host::Answer::new(epid, kms_activation::Hwid([1; 8]), 50);
    let too_long = "0".repeat(64);
    assert!(matches!(
        conn.answer(id, answer(too_long), &mut rng),
        Err(AnswerError::Unencodable(_))
    ));
    assert!(matches!(
        conn.answer(id, answer("a\0b".into()), &mut rng),
        Err(AnswerError::Unencodable(_))
    ));
    assert!(conn.transmit().is_empty(), "nothing sent for a bad answer");
    assert_eq!(
        conn.refuse(id, HResult::S_OK),
        Err(AnswerError::SuccessIsNotARefusal)
    );
    conn.answer(id, answer("0".repeat(63)), &mut rng).unwrap();
    assert_eq!(
        conn.refuse(id, HResult::INVALID_DATA),
        Err(AnswerError::UnknownRequest(id))
    );
    assert_eq!(id.index(), 0);
}

/// A bound NDR32-only connection and `n` pipelined request PDUs (call ids
/// 10, 11, …), as a client that does not wait for answers would send.
fn pipelined(conn: &mut HostConnection, n: u32) -> Vec<u8> {
    use bytes::BytesMut;
    use kms_activation::rpc::{self, Pdu, PduBody, PfcFlags, Request};
    let mut rng = rng();
    let mut client_config = ClientConfig::default();
    client_config.set_ndr64(false).set_btfn(false);
    let client = ClientConnection::new(&client_config);
    let bind = client.transmit().to_vec();
    conn.handle_input(FileTime::from_ticks(T0), &bind, &mut rng)
        .unwrap();
    let ack = conn.transmit().len();
    conn.advance_transmit(ack);
    let mut out = BytesMut::new();
    for call in 0..n {
        let mut msg = BytesMut::new();
        kms_activation::message::encode_request(
            &windows_request(u128::from(call) + 1, T0),
            &mut rng,
            &mut msg,
        )
        .unwrap();
        let mut stub = BytesMut::new();
        rpc::encode_request_stub(rpc::Ndr::Ndr32, &msg, &mut stub);
        Pdu {
            call_id: 10 + call,
            flags: PfcFlags::SINGLE,
            body: PduBody::Request(Request {
                alloc_hint: u32::try_from(stub.len()).unwrap(),
                context_id: 0,
                opnum: 0,
                object: None,
                stub: stub.freeze(),
            }),
        }
        .encode(&mut out);
    }
    out.to_vec()
}

fn call_ids(bytes: &[u8]) -> Vec<u32> {
    let mut ids = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let len = kms_activation::rpc::frame_len(rest, 65_535)
            .unwrap()
            .unwrap();
        let pdu = kms_activation::rpc::Pdu::decode(&rest[..len]).unwrap();
        ids.push(pdu.call_id);
        rest = &rest[len..];
    }
    ids
}

#[test]
fn answers_leave_in_call_order_whatever_the_order_given() {
    let mut config = HostConfig::default();
    let mut limits = *config.limits();
    limits.max_unanswered_requests = 2;
    config.set_limits(limits);
    let mut conn = HostConnection::new(&config);
    let stream = pipelined(&mut conn, 3);
    let mut rng = rng();
    let now = FileTime::from_ticks(T0);
    // At the limit of two unanswered requests the third stays unread.
    let used = conn.handle_input(now, &stream, &mut rng).unwrap();
    assert!(used < stream.len());
    assert_eq!(conn.unanswered_requests(), 2);
    let Some(HostEvent::Request(first)) = conn.poll_event() else {
        panic!()
    };
    let Some(HostEvent::Request(second)) = conn.poll_event() else {
        panic!()
    };
    assert_eq!(
        conn.handle_input(now, &stream[used..], &mut rng).unwrap(),
        0
    );
    // The second is answered first: nothing may leave before the first.
    conn.refuse(second.id, HResult::CLIENT_TABLE_FULL).unwrap();
    assert!(conn.transmit().is_empty());
    conn.refuse(first.id, HResult::ACCESS_DENIED).unwrap();
    assert_eq!(call_ids(conn.transmit()), vec![10, 11]);
    conn.advance_transmit(conn.transmit().len());
    // Room again: the third request is read.
    let rest = conn.handle_input(now, &stream[used..], &mut rng).unwrap();
    assert_eq!(used + rest, stream.len());
    let Some(HostEvent::Request(third)) = conn.poll_event() else {
        panic!()
    };
    assert_eq!(third.context.call_id, 12);
    conn.refuse(third.id, HResult::ACCESS_DENIED).unwrap();
    assert_eq!(call_ids(conn.transmit()), vec![12]);
}

#[test]
fn rejected_requests_name_their_reason() {
    let mut request = windows_request(1, T0);
    request.n_policy = 5000;
    let (_, event) = connection_with_event(request);
    let HostEvent::Rejected(rejected) = event else {
        panic!("not rejected: {event:?}")
    };
    assert_eq!(
        rejected.reason,
        RejectReason::NPolicyTooLarge { n_policy: 5000 }
    );
    assert_eq!(rejected.result, HResult::INVALID_DATA);
    assert_eq!(rejected.body.unwrap().n_policy, 5000);
}

#[test]
fn count_window_is_configurable() {
    let mut config = KmsHostConfig::default();
    config.set_count_window(Duration::from_secs(3600));
    let host = start(config);
    assert_eq!(ask(&host, windows_request(1, T0), T0), Outcome::Count(1));
    let later = T0 + 61 * MINUTE;
    assert_eq!(
        ask(&host, windows_request(2, later), later),
        Outcome::Count(1)
    );
}

#[cfg(feature = "tracing")]
mod tracing_events {
    use super::*;

    #[test]
    fn every_record_is_a_tracing_event() {
        // Other tests' events land in the process-wide log too, so this
        // test looks for its own CMID.
        let log = crate::support::traced();
        let host = start(KmsHostConfig::default());
        let cmid = 0x7777_0000_0000_0000_0000_0000_0000_0077;
        ask(&host, windows_request(cmid, T0), T0);
        let wanted = format!("cmid={}", Uuid::from_u128(cmid));
        let ours = log.events(|event| event.fields.contains(&wanted));
        assert_eq!(ours.len(), 1, "{ours:?}");
        let event = &ours[0];
        assert_eq!(event.target, "kms_activation::activation");
        let has = |prefix: &str| event.fields.iter().any(|f| f.starts_with(prefix));
        for field in [
            "workstation=",
            "n_policy=25",
            "license_status=2",
            "sku=",
            "result=",
        ] {
            assert!(has(field), "{field} missing from {:?}", event.fields);
        }
    }
}

/// A request for `sku` as its client sends it (its own KMS ID, N policy and
/// application).
fn sku_request(sku: &product::Sku, cmid: u128, at: u64) -> RequestBody {
    let item = sku.kms_item().unwrap();
    RequestBody {
        application_id: item.application_id(),
        sku_id: sku.id(),
        kms_id: item.id(),
        n_policy: item.n_count_policy(),
        ..windows_request(cmid, at)
    }
}

const SERVER_2022_KMS: &str = "b74263e4-0f92-46c6-bcf8-c11d5efe2959";
const SERVER_2019_CSVLK: &str = "2e7a9ad1-a849-4b56-babe-17d5a29fe4b4";

/// Microsoft's table: a Server 2022 or 2025 host key activates "Windows
/// Server 2022 (all editions)". A default host (every key) answered all six
/// with 0xC004F042 before the coverage became data.
#[test]
fn default_host_activates_every_server_2022_edition() {
    let host = start(KmsHostConfig::default());
    let editions: Vec<&product::Sku> = product::kms_item(id(SERVER_2022_KMS))
        .unwrap()
        .skus()
        .collect();
    assert_eq!(
        editions.len(),
        6,
        "Standard, Datacenter, Azure Edition, Azure Core, 2 SAC"
    );
    // Published GVLKs (Microsoft's table) among them.
    for gvlk in [
        "VDYBN-27WPP-V4HQT-9VMD4-VMK7H",
        "WX4NM-KYWYW-QJJR4-XV3QB-6VM33",
        "NTBV8-9K7Q8-V27C6-M2BTV-KHMXV",
    ] {
        assert!(editions.iter().any(|s| s.gvlk() == gvlk), "{gvlk}");
    }
    // Answered with the general Server 2022 key's ePID (group 4573 in the
    // XML), not the Azure-only or lab key's.
    let epid = host.epid_for(id(SERVER_2022_KMS)).unwrap();
    assert!(epid.starts_with("03612-04573-"), "{epid}");
    let mut at = T0;
    for (n, sku) in editions.iter().enumerate() {
        at += MINUTE;
        let cmid = 100 + n as u128;
        assert_eq!(
            ask(&host, sku_request(sku, cmid, at), at),
            Outcome::Count(n as u32 + 1),
            "{}",
            sku.name()
        );
    }
    // And the Server 2025 editions, the published Azure Edition key included.
    for gvlk in [
        "TVRH6-WHNXV-R9WG3-9XRFY-MY832",
        "D764K-2NDRG-47T6Q-P8T8W-YP6DF",
        "XGN3F-F394H-FD2MY-PP6FD-8MCRC",
    ] {
        at += MINUTE;
        let sku = product::sku_by_gvlk(gvlk).unwrap();
        assert!(
            matches!(ask(&host, sku_request(sku, 7, at), at), Outcome::Count(_)),
            "{gvlk}"
        );
    }
}

/// "A key never activates a newer product": a host holding only the Server
/// 2019 key refuses Server 2022 with 0xC004F042, and activates Server 2019
/// and 2016 and Windows 10.
#[test]
fn a_server_2019_host_refuses_server_2022() {
    let mut config = KmsHostConfig::default();
    config.set_csvlks([id(SERVER_2019_CSVLK)]);
    let host = start(config);
    let mut at = T0;
    for sku in product::kms_item(id(SERVER_2022_KMS)).unwrap().skus() {
        at += MINUTE;
        assert_eq!(
            ask(&host, sku_request(sku, 1, at), at),
            Outcome::Refused(HResult::KMS_ID_MISMATCH),
            "{}",
            sku.name()
        );
    }
    for gvlk in [
        "N69G4-B89J2-4G8F4-WWYCC-J464C", // Server 2019 Standard
        "WC2BQ-8NRM3-FDDYY-2BFGV-KHKQY", // Server 2016 Standard
        "NPPR9-FWDCX-D2C8J-H872K-2YT43", // Windows 10/11 Enterprise
    ] {
        at += MINUTE;
        let sku = product::sku_by_gvlk(gvlk).unwrap();
        assert!(
            matches!(ask(&host, sku_request(sku, 2, at), at), Outcome::Count(_)),
            "{gvlk}"
        );
    }
}

/// The reported bug: a host holding only the Server 2008 R2 channel A key
/// (Web, HPC) answered Server 2008 R2 Datacenter. Channel A covers Web/HPC
/// and the Windows 7 / Vista clients, nothing above.
#[test]
fn a_server_2008_r2_channel_a_host_refuses_datacenter() {
    let mut config = KmsHostConfig::default();
    config.set_csvlks([id("f73d1bcd-0802-47dd-b2d9-81bf2f8c0744")]);
    let host = start(config);
    let datacenter = product::sku_by_gvlk("74YFP-3QFB3-KQT8W-PMXWJ-7M648").unwrap();
    assert_eq!(datacenter.name(), "Windows Server 2008 R2 Datacenter");
    assert_eq!(
        ask(&host, sku_request(datacenter, 1, T0), T0),
        Outcome::Refused(HResult::KMS_ID_MISMATCH)
    );
    let windows_7_pro = product::sku_by_gvlk("FJ82H-XT6CR-J8D7P-XQJJ2-GPDD4").unwrap();
    assert_eq!(windows_7_pro.name(), "Windows 7 Professional");
    assert_eq!(
        ask(&host, sku_request(windows_7_pro, 2, T0), T0),
        Outcome::Count(1)
    );
}

/// Microsoft: the host keeps the 50 most recent contacts, twice the largest
/// N policy it has seen, per application. Servers (N 5) alone cap at 10;
/// once a Windows client (N 25) has asked, the Windows count caps at 50,
/// while Office (N 5) stays capped at 10 whatever Windows does.
#[test]
fn count_cap_follows_the_largest_n_policy_seen() {
    let host = start(KmsHostConfig::default());
    let server = product::sku_by_gvlk("WMDGN-G9PQG-XVVXX-R3X43-63DFG").unwrap(); // Server 2019 Datacenter
    assert_eq!(server.kms_item().unwrap().n_count_policy(), 5);
    let mut at = T0;
    let count = |request: RequestBody, at: u64| match ask(&host, request, at) {
        Outcome::Count(c) => c,
        Outcome::Refused(h) => panic!("refused {h}"),
    };
    let mut last = 0;
    for cmid in 1..=12u128 {
        at += MINUTE;
        last = count(sku_request(server, cmid, at), at);
    }
    assert_eq!(last, 10, "12 servers, N 5: capped at 10");
    at += MINUTE;
    assert_eq!(
        count(windows_request(13, at), at),
        13,
        "a Windows client (N 25) raises the cap: 13 clients"
    );
    at += MINUTE;
    assert_eq!(
        count(sku_request(server, 14, at), at),
        14,
        "a server after it sees the raised cap too"
    );
    for cmid in 1..=12u128 {
        at += MINUTE;
        last = count(office_request(1000 + cmid, at), at);
    }
    assert_eq!(last, 10, "Office keeps its own cap");
    for cmid in 15..=60u128 {
        at += MINUTE;
        last = count(sku_request(server, cmid, at), at);
    }
    assert_eq!(last, 50, "Windows: 60 clients, largest N 25: capped at 50");
}

/// `--host-build` errors name the build; a client build holds no server key.
#[test]
fn host_build_errors_name_the_build() {
    let start_with = |config: KmsHostConfig| {
        pollster::block_on(KmsHost::start(
            config,
            MemoryStore::default(),
            FileTime::from_ticks(T0),
            &mut rng(),
        ))
    };
    let mut config = KmsHostConfig::default();
    config.set_host_build(0);
    let error = start_with(config).unwrap_err();
    assert_eq!(error, KmsHostError::UnknownHostBuild(0));
    assert!(
        error.to_string().contains("unknown host build 0"),
        "{error}"
    );
    // Windows 10 21H2 (client build): the default set leaves out every
    // Windows Server key; the client keys remain.
    let mut config = KmsHostConfig::default();
    config.set_host_build(19044);
    let host = start_with(config).unwrap();
    assert!(host.epids().count() > 0);
    assert!(
        host.epids()
            .all(|(c, _)| !c.name().starts_with("Windows Server")),
        "a server key on a client build"
    );
    assert_eq!(
        ask(&host, windows_request(1, T0), T0),
        Outcome::Count(1),
        "Windows 10 clients from a Windows 10 host"
    );
    // Holding a server key explicitly on a client build is an error.
    let mut config = KmsHostConfig::default();
    config
        .set_host_build(19044)
        .set_csvlks([id(SERVER_2019_CSVLK)]);
    let error = start_with(config).unwrap_err();
    assert!(
        error.to_string().contains("19044"),
        "the error names the build: {error}"
    );
}

#[test]
fn kms_host_names_and_builds_are_checked_and_echoed() {
    let (_, error) = crate::support::kms_host_refused(["--host-build", "0"]);
    assert!(error.contains("unknown host build 0"), "{error}");
    assert!(error.contains("20348"), "lists server builds: {error}");
    // Several partial matches: listed, none picked.
    let (_, error) = crate::support::kms_host_refused(["--csvlk", "server 2008 r2"]);
    for channel in ["R2 A", "R2 B", "R2 C"] {
        assert!(error.contains(channel), "{error}");
    }
    let (_, error) = crate::support::kms_host_refused(["--csvlk", "toaster"]);
    assert!(error.contains("toaster"), "{error}");
    let (_, error) = crate::support::kms_host_refused(["--products", "windows 11 toaster"]);
    assert!(error.contains("windows 11 toaster"), "{error}");
    let (_, error) = crate::support::kms_host_refused(["--products", "office"]);
    assert!(error.contains("products match"), "{error}");
}

/// `kms-catalog --csvlks --json` lists every host key with what it
/// activates, as Microsoft's table says: the Server 2022 key activates
/// Server 2022 and Windows 10/11, the Server 2008 R2 channel A key not
/// Datacenter.
#[test]
fn kms_catalog_lists_the_host_keys() {
    let out = crate::loopback::kms_catalog(&["--csvlks", "--json"]);
    assert!(out.status.success());
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), product::csvlks().len());
    let activates = |csvlk: &str| -> Vec<String> {
        let row = rows
            .iter()
            .find(|r| r["csvlk_id"] == csvlk)
            .unwrap_or_else(|| panic!("{csvlk} not listed"));
        row["activates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["kms_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let server_2022 = activates("661f7658-7035-4b4c-9f35-010682943ec2");
    assert!(server_2022.contains(&SERVER_2022_KMS.to_owned()));
    assert!(server_2022.contains(&WIN_CLIENT_KMS.to_owned()));
    let r2_a = activates("f73d1bcd-0802-47dd-b2d9-81bf2f8c0744");
    // Server 2008 R2 C (Datacenter and Itanium) KMS ID.
    assert!(!r2_a.contains(&"b2ca2689-a9a8-42d7-938d-cf8e9f201958".to_owned()));
    // Windows 7.
    assert!(r2_a.contains(&"7fde5219-fbfa-484a-82c9-34d1ad53e856".to_owned()));
}
