//! The client side: one sans-IO [`ClientConnection`] per TCP connection,
//! and what a real client does around it.
//!
//! * [`ProductRequest`] and [`MachineIdentity`] build requests from a
//!   catalog product and a machine; the licence fields come from
//!   [`LicenseTimeline`](crate::license::LicenseTimeline).
//! * [`ActivationOutcome`] is what the client concludes from the answer
//!   (activated, or the HRESULT it shows), and feeds the timeline back.
//! * [`KmsLocator`] and [`order_srv_records`] choose hosts the way clients
//!   do (SRV priority and weight, failover, host caching); with the `dns`
//!   feature, `discovery` looks the SRV records up.
//!
//! A client connection binds to the KMS interface, sends activation requests
//! one at a time and verifies each response against the request it answers
//! (every check listed under [what a client verifies](crate::message#what-a-client-verifies)). It is driven like the host connection:
//! feed received bytes to [`ClientConnection::handle_input`] (which says how
//! many it consumed; offer the rest again after draining), send what
//! [`ClientConnection::transmit`] holds (dropping what was sent with
//! [`ClientConnection::advance_transmit`]) or what
//! [`ClientConnection::poll_transmit`] copies out, and collect results from
//! [`ClientConnection::poll_event`].
//!
//! ```
//! use kms_activation::client::{ClientConfig, ClientConnection};
//! use kms_activation::host::{FixedResponder, HostConfig, HostConnection};
//! use kms_activation::client::ClientEvent;
//! use kms_activation::message::{RequestBody, Version};
//! use kms_activation::{FileTime, LicenseStatus, ScriptedRandom, Uuid};
//!
//! let now = FileTime::from_ticks(134_397_882_570_000_000);
//! let request = RequestBody {
//!     version: Version::V6,
//!     vm_info: 0,
//!     license_status: LicenseStatus::OobGrace,
//!     binding_expiration: 43_200,
//!     application_id: "55c92734-d682-4d71-983e-d6ec3f16059f".parse().unwrap(),
//!     sku_id: "73111121-5638-40f6-bc11-f1d7b0d64300".parse().unwrap(),
//!     kms_id: "58e2134f-8e11-4d17-9cb2-91069c151148".parse().unwrap(),
//!     cmid: Uuid::from_u128(0x1111_1111_2222_3333_4444_5555_5555_5555),
//!     previous_cmid: Uuid::nil(),
//!     n_policy: 25,
//!     client_time: now,
//!     workstation: "client01.example.org".into(),
//! };
//!
//! let mut rng = ScriptedRandom::new((0u8..=255).collect::<Vec<_>>());
//! let mut client = ClientConnection::new(&ClientConfig::default());
//! client.send_request(request, &mut rng).unwrap();
//! let mut host = HostConnection::new(&HostConfig::default());
//! let mut responder = FixedResponder::default();
//!
//! // Step both engines in memory until the client has its answer.
//! let (mut to_host, mut to_client) = (Vec::new(), Vec::new());
//! for _ in 0..8 {
//!     to_host.extend_from_slice(client.transmit());
//!     client.advance_transmit(to_host.len());
//!     host.handle_input_with(now, &to_host, &mut responder, &mut rng).unwrap();
//!     to_host.clear();
//!     let _ = host.poll_transmit(&mut to_client);
//!     let used = client.handle_input(&to_client, &mut rng).unwrap();
//!     assert_eq!(used, to_client.len());
//!     to_client.clear();
//! }
//! assert!(matches!(client.poll_event(), Some(ClientEvent::Bound { ndr64: true, .. })));
//! let Some(ClientEvent::Answered(response)) = client.poll_event() else { panic!() };
//! assert_eq!(response.body.count, 50);
//! assert!(client.is_idle());
//! ```

mod config;
mod connection;
#[cfg(feature = "dns")]
#[cfg_attr(docsrs, doc(cfg(feature = "dns")))]
pub mod discovery;
mod outcome;
mod request;
mod srv;

pub use config::ClientConfig;
pub use connection::{
    BindAckProblem, CallMismatch, ClientConnection, ClientError, ClientEvent, MAX_PENDING_EVENTS,
    MAX_PENDING_OUTPUT, MAX_QUEUED_REQUESTS,
};
pub use outcome::{ActivationOutcome, EpidCheck, ResponseReport};
pub use request::{MachineIdentity, ProductRequest, ProductRequestError};
pub use srv::{
    DEFAULT_KMS_PORT, FailedAttempt, HostSource, KMS_SRV_LABEL, KmsHostName, KmsLocator,
    LocatorConfig, SrvRecord, SrvSelection, order_srv_records, srv_query_name, srv_zone_line,
};
