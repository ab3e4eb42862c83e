//! Any split of the byte streams gives the same results (proptest).

use proptest::prelude::*;

use crate::vectors::{
    Read, check_client, check_host, client_stream, load_all, mask_bind_ack_pad, run_host,
    server_stream, whole,
};

/// Cuts `bytes` at the given fractions of its length.
fn cutter(cuts: Vec<u16>) -> impl Fn(&[u8]) -> Vec<Vec<u8>> {
    move |bytes: &[u8]| {
        let mut points: Vec<usize> = cuts
            .iter()
            .map(|c| usize::from(*c) * bytes.len() / usize::from(u16::MAX))
            .collect();
        points.push(0);
        points.push(bytes.len());
        points.sort_unstable();
        points.dedup();
        points
            .windows(2)
            .map(|w| bytes[w[0]..w[1]].to_vec())
            .collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn host_output_is_independent_of_read_boundaries(cuts in prop::collection::vec(any::<u16>(), 0..12)) {
        let split = cutter(cuts);
        for v in load_all() {
            check_host(&v, &split);
        }
    }

    #[test]
    fn client_output_is_independent_of_read_boundaries(cuts in prop::collection::vec(any::<u16>(), 0..12)) {
        let split = cutter(cuts);
        for v in load_all() {
            check_client(&v, &split);
        }
    }
}

/// One byte per read.
#[test]
fn one_byte_at_a_time() {
    for v in load_all() {
        let bytewise = |b: &[u8]| b.chunks(1).map(<[u8]>::to_vec).collect();
        check_host(&v, &bytewise);
        check_client(&v, &bytewise);
    }
}

/// The whole client stream in one read: several PDUs, pipelined.
#[test]
fn whole_client_stream_in_one_read() {
    for v in load_all() {
        for conn in &v.connections {
            let mut merged = vec![Read {
                dir: "c2s".into(),
                hex: hex::encode(client_stream(conn)),
            }];
            merged.extend(conn.iter().filter(|r| !r.from_client()).map(|r| Read {
                dir: r.dir.clone(),
                hex: r.hex.clone(),
            }));
            let (out, _) = run_host(&v, &merged, &whole);
            assert_eq!(
                mask_bind_ack_pad(&out),
                mask_bind_ack_pad(&server_stream(conn))
            );
        }
    }
}
