//! Property-based fuzzing (proptest) of the RecordIO, `.idx`, `.bin` and `pairs.txt` parsers:
//! arbitrary and mutated inputs never panic, and what the writers produce reads back exactly.
//! `PROPTEST_CASES=100000 cargo test -p face-data --test fuzz` runs a longer campaign.

use std::path::Path;

use face_data::recordio::{frame_record, parse_index, read_record, IrHeader, MAGIC};
use face_data::{LfwPairs, VerificationBin};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000),
        ..ProptestConfig::default()
    }
}

/// Payloads rich in the magic word at aligned and unaligned offsets.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            3 => any::<u8>().prop_map(|b| vec![b]),
            1 => Just(MAGIC.to_le_bytes().to_vec()),
        ],
        0..64,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn record_framing_round_trips(payloads in prop::collection::vec(payload(), 1..6)) {
        let mut file = Vec::new();
        for p in &payloads {
            frame_record(p, &mut file);
        }
        let mut at = 0;
        for p in &payloads {
            let (back, next) = read_record(&file, at).unwrap();
            prop_assert_eq!(&back, p);
            at = next;
        }
        prop_assert_eq!(at, file.len());
    }

    #[test]
    fn read_record_never_panics(data in prop::collection::vec(any::<u8>(), 0..256), offset in 0usize..300) {
        let _ = read_record(&data, offset);
    }

    #[test]
    fn mutated_records_never_panic(p in payload(), flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4)) {
        let mut file = Vec::new();
        frame_record(&p, &mut file);
        for (i, b) in flips {
            let n = file.len();
            file[i % n] = b;
        }
        let _ = read_record(&file, 0);
        if let Ok((rec, _)) = read_record(&file, 0) {
            let _ = IrHeader::unpack(&rec);
        }
    }

    #[test]
    fn ir_headers_round_trip(labels in prop::collection::vec(any::<f32>(), 0..5), id in any::<u64>(), body in prop::collection::vec(any::<u8>(), 0..40)) {
        let mut h = IrHeader::with_labels(labels);
        h.id = id;
        let packed = h.pack(&body);
        let (back, rest) = IrHeader::unpack(&packed).unwrap();
        prop_assert_eq!(back.flag, h.flag);
        prop_assert_eq!(back.id, id);
        prop_assert_eq!(back.labels.iter().map(|f| f.to_bits()).collect::<Vec<_>>(), h.labels.iter().map(|f| f.to_bits()).collect::<Vec<_>>());
        prop_assert_eq!(rest, &body[..]);
    }

    #[test]
    fn ir_header_unpack_never_panics(data in prop::collection::vec(any::<u8>(), 0..80)) {
        let _ = IrHeader::unpack(&data);
    }

    #[test]
    fn index_parser_never_panics(text in "[0-9\\t \\n-]{0,80}|\\PC{0,80}", len in any::<u64>()) {
        let _ = parse_index(&text, Path::new("x.idx"), len);
    }

    #[test]
    fn bins_round_trip(images in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..6).prop_map(|mut v| { if v.len() % 2 == 1 { v.pop(); } v }), seed in any::<u64>()) {
        let issame = (0..images.len() / 2).map(|k| (seed >> (k % 64)) & 1 == 1).collect();
        let bin = VerificationBin { images, issame };
        prop_assert_eq!(VerificationBin::parse(&bin.to_pickle()).unwrap(), bin);
    }

    #[test]
    fn bin_parser_never_panics(data in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = VerificationBin::parse(&data);
    }

    #[test]
    fn mutated_bins_never_panic(flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..5)) {
        let bin = VerificationBin { images: vec![vec![1, 2, 3], vec![4; 300]], issame: vec![true] };
        let mut bytes = bin.to_pickle();
        for (i, b) in flips {
            let n = bytes.len();
            bytes[i % n] = b;
        }
        let _ = VerificationBin::parse(&bytes);
    }

    #[test]
    fn pairs_parser_never_panics(text in "([0-9A-Za-z_]{0,6}[\\t\\n]){0,30}") {
        let _ = LfwPairs::parse(&text);
    }
}
