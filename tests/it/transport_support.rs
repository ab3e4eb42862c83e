//! Helpers for the loopback tests of both transports.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use kms_activation::host::store::MemoryStore;
use kms_activation::host::{ActivationRecord, KmsHost, KmsHostConfig};
use kms_activation::message::{RequestBody, Version};
use kms_activation::transport::{CloseReason, Observer, ServerLimits};
use kms_activation::{FileTime, LicenseStatus, OsRandom, Uuid};

pub const WINDOWS: Uuid = Uuid::from_u128(0x55c92734_d682_4d71_983e_d6ec3f16059f);
/// Windows 10/11 client KMS ID (N 25) and Windows 10 Enterprise.
pub const WIN_CLIENT_KMS: Uuid = Uuid::from_u128(0x58e2134f_8e11_4d17_9cb2_91069c151148);
pub const WIN10_ENT: Uuid = Uuid::from_u128(0x73111121_5638_40f6_bc11_f1d7b0d64300);

/// The wall clock: the transports hand it to the engine, so requests carry it too.
#[expect(
    clippy::disallowed_methods,
    reason = "loopback tests run on the wall clock"
)]
pub fn wall_now() -> FileTime {
    FileTime::try_from(std::time::SystemTime::now()).unwrap()
}

#[expect(
    clippy::disallowed_methods,
    reason = "loopback tests measure real time"
)]
pub fn instant() -> std::time::Instant {
    std::time::Instant::now()
}

pub fn request(version: Version, cmid: u128) -> RequestBody {
    RequestBody {
        version,
        vm_info: 0,
        license_status: LicenseStatus::OobGrace,
        binding_expiration: 43_200,
        application_id: WINDOWS,
        sku_id: WIN10_ENT,
        kms_id: WIN_CLIENT_KMS,
        cmid: Uuid::from_u128(cmid),
        previous_cmid: Uuid::nil(),
        n_policy: 25,
        client_time: wall_now(),
        workstation: format!("pc{cmid}.lab.example"),
    }
}

pub async fn kms_host() -> KmsHost<MemoryStore> {
    KmsHost::start(
        KmsHostConfig::default(),
        MemoryStore::default(),
        wall_now(),
        &mut OsRandom,
    )
    .await
    .unwrap()
}

/// Short limits so that timeouts show within a test.
pub fn quick_limits() -> ServerLimits {
    ServerLimits {
        idle_timeout: Duration::from_millis(1500),
        pdu_timeout: Duration::from_millis(400),
        handler_timeout: Duration::from_secs(2),
        shutdown_grace: Duration::from_secs(3),
        ..ServerLimits::default()
    }
}

/// Remembers what a server reported.
#[derive(Default)]
pub struct Recorder {
    pub closed: Mutex<Vec<(SocketAddr, CloseReason)>>,
    pub records: Mutex<Vec<ActivationRecord>>,
    pub refused: Mutex<usize>,
}

impl Recorder {
    pub fn reasons(&self) -> Vec<CloseReason> {
        self.closed
            .lock()
            .unwrap()
            .iter()
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// The close reason of the connection from `peer`, once it closed.
    pub fn reason_for(&self, peer: SocketAddr) -> Option<CloseReason> {
        self.closed
            .lock()
            .unwrap()
            .iter()
            .find(|(p, _)| *p == peer)
            .map(|(_, r)| r.clone())
    }
}

impl Observer for Recorder {
    fn connection_closed(&self, peer: SocketAddr, _: u64, reason: &CloseReason) {
        self.closed.lock().unwrap().push((peer, reason.clone()));
    }

    fn connection_refused(&self, _: SocketAddr) {
        *self.refused.lock().unwrap() += 1;
    }

    fn request_processed(&self, record: &ActivationRecord, _: Duration) {
        self.records.lock().unwrap().push(record.clone());
    }
}

/// A bind PDU header claiming a 65 000-byte fragment (over the host's cap).
pub fn oversized_header() -> Vec<u8> {
    let mut pdu = vec![5, 0, 11, 3, 0x10, 0, 0, 0];
    pdu.extend_from_slice(&65_000u16.to_le_bytes());
    pdu.extend_from_slice(&[0, 0, 1, 0, 0, 0]);
    pdu
}

/// The first half of a bind PDU as vlmcs sends it (the rest never comes).
pub fn half_a_bind() -> Vec<u8> {
    let mut pdu = vec![5, 0, 11, 3, 0x10, 0, 0, 0];
    pdu.extend_from_slice(&116u16.to_le_bytes());
    pdu.extend_from_slice(&[0, 0, 1, 0, 0, 0]);
    pdu.extend_from_slice(&[0xd0, 0x16, 0xd0, 0x16, 0, 0, 0, 0]);
    pdu
}
