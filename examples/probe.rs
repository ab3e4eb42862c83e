//! A client probe: asks a KMS host to activate one product, as a Windows
//! client in its grace period would, and prints what the client concludes.
//!
//! ```text
//! cargo run --example probe --features blocking                    # 127.0.0.1:1688
//! cargo run --example probe --features blocking -- kms.example.org:1688 "office ltsc professional plus 2021"
//! ```
//!
//! A verified response is not yet an activation: the client counts itself
//! activated only when the host's count reaches the product's threshold
//! (25 for Windows clients, 5 for servers and Office); below it, it shows
//! 0xC004F038. The `kms-client` tool (feature `cli`) is the complete probe.

use std::time::Duration;

use chrono::Utc;
use kms_activation::client::{ClientConfig, MachineIdentity, ProductRequest};
use kms_activation::license::LicenseTimeline;
use kms_activation::transport::blocking::Client;
use kms_activation::{FileTime, OsRandom};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let host = args.next().unwrap_or_else(|| "127.0.0.1:1688".to_owned());
    let product = args
        .next()
        .unwrap_or_else(|| "windows 10/11 enterprise".to_owned());

    // The request a fresh installation of the product sends now.
    let product = ProductRequest::for_product(&product)?;
    let machine = MachineIdentity::random("probe.example.org", &mut OsRandom);
    #[expect(clippy::disallowed_methods, reason = "the probe reads the wall clock")]
    let now = Utc::now();
    let timeline = LicenseTimeline::new(now, product.license_policy());
    let time = FileTime::try_from(now)?.truncated_to_seconds();
    let request = product.build(&machine, &timeline.state_at(now), time);

    let mut client = Client::connect(&*host, &ClientConfig::default(), Duration::from_secs(10))?;
    let outcome = client.activate(request.clone())?.conclusion(&request, now);
    println!(
        "{host}: {} ({:#}): {}",
        product.sku().name(),
        outcome.hresult(),
        outcome.description()
    );
    if let Some(response) = outcome.response() {
        println!("  ePID {}  count {}", response.epid, response.count);
    }
    if outcome.is_activated() {
        Ok(())
    } else {
        std::process::exit(1)
    }
}
