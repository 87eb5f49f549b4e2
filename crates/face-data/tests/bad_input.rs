//! Every bad input is a typed error naming the file (and record or sample); the loader can skip
//! bad samples and counts them.

// `.err().expect()` rather than `expect_err`: the latter would print a whole decoded image
// (megabytes of Debug output) when a test fails.
#![allow(clippy::err_expect)]

mod common;

use common::synthetic_folder;
use face_augment::Pipeline;
use face_data::recordio::IrHeader;
use face_data::{
    pack_folder, DataError, FaceDataset, ImageFolder, LfwPairs, Loader, LoaderConfig,
    RecordDataset, RecordWriter, VerificationBin,
};

#[test]
fn corrupt_and_truncated_images_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    synthetic_folder(tmp.path(), 2, 2);
    let victim = tmp.path().join("person_001/0001.jpg");
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 3]).unwrap();
    let folder = ImageFolder::open(tmp.path()).unwrap();
    let err = folder.get(3).err().expect("a truncated JPEG is an error");
    assert!(
        matches!(&err, DataError::Decode { path, index: 3, .. } if path.ends_with("person_001/0001.jpg")),
        "{err}"
    );
    assert!(err.to_string().contains("truncated"), "{err}");
    std::fs::write(&victim, b"definitely not a jpeg").unwrap();
    assert!(matches!(folder.get(3), Err(DataError::Decode { .. })));
    std::fs::remove_file(&victim).unwrap();
    assert!(matches!(folder.get(3), Err(DataError::Io { .. })));
}

#[test]
fn empty_identity_folders_and_empty_roots_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(matches!(
        ImageFolder::open(tmp.path()),
        Err(DataError::Layout { .. })
    ));
    synthetic_folder(tmp.path(), 2, 1);
    std::fs::create_dir(tmp.path().join("person_zzz")).unwrap();
    let err = ImageFolder::open(tmp.path()).unwrap_err();
    assert!(
        err.to_string().contains("person_zzz") && err.to_string().contains("no images"),
        "{err}"
    );
    assert!(matches!(
        ImageFolder::open(tmp.path().join("missing")),
        Err(DataError::Io { .. })
    ));
}

fn packed(tmp: &std::path::Path) -> std::path::PathBuf {
    let src = tmp.join("src");
    synthetic_folder(&src, 2, 2);
    let rec = tmp.join("train.rec");
    pack_folder(&ImageFolder::open(&src).unwrap(), &rec).unwrap();
    rec
}

#[test]
fn bad_records_and_indexes_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let rec = packed(tmp.path());
    let idx = rec.with_extension("idx");
    let good_idx = std::fs::read_to_string(&idx).unwrap();
    let len = std::fs::metadata(&rec).unwrap().len();

    // An .idx pointing past the end of the .rec.
    std::fs::write(&idx, format!("{good_idx}99\t{}\n", len + 100)).unwrap();
    let err = RecordDataset::open(&rec)
        .err()
        .expect("offset past the end");
    assert!(matches!(&err, DataError::Index { line: 8, .. }), "{err}");
    // Garbage in the .idx.
    std::fs::write(&idx, "0\tzero\n").unwrap();
    assert!(matches!(
        RecordDataset::open(&rec),
        Err(DataError::Index { line: 1, .. })
    ));
    // An offset inside the file but not at a record: the image read says bad magic, with the key.
    let shifted: String = good_idx
        .lines()
        .map(|l| match l.split_once('\t') {
            Some(("1", off)) => format!("1\t{}\n", off.parse::<u64>().unwrap() + 12),
            _ => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&idx, shifted).unwrap();
    let data = RecordDataset::open(&rec).unwrap();
    let err = data.get(0).err().expect("bad magic");
    assert!(
        err.to_string().contains("bad magic") && err.to_string().contains("key 1"),
        "{err}"
    );
    std::fs::write(&idx, &good_idx).unwrap();

    // A truncated .rec (the index still points into the lost part).
    let bytes = std::fs::read(&rec).unwrap();
    std::fs::write(&rec, &bytes[..bytes.len() / 2]).unwrap();
    assert!(RecordDataset::open(&rec).is_err());
    // A length word claiming more than the file holds.
    let mut bad = bytes.clone();
    bad[4..8].copy_from_slice(&((1u32 << 29) - 1).to_le_bytes());
    std::fs::write(&rec, &bad).unwrap();
    let err = RecordDataset::open(&rec)
        .err()
        .expect("length past the end");
    assert!(matches!(&err, DataError::Record { offset: 0, .. }), "{err}");
    // A missing .idx.
    std::fs::write(&rec, &bytes).unwrap();
    std::fs::remove_file(&idx).unwrap();
    assert!(matches!(
        RecordDataset::open(&rec),
        Err(DataError::Io { .. })
    ));
}

#[test]
fn a_record_with_a_broken_header_or_label_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let rec = tmp.path().join("x.rec");
    let mut w = RecordWriter::create(&rec).unwrap();
    w.write(0, &[1, 2, 3]).unwrap(); // shorter than an IRHeader
    w.finish().unwrap();
    assert!(matches!(
        RecordDataset::open(&rec),
        Err(DataError::Record { .. })
    ));
    let mut w = RecordWriter::create(&rec).unwrap();
    let mut h = IrHeader::image(0, 0);
    h.label = f32::NAN;
    w.write(0, &h.pack(b"img")).unwrap();
    w.finish().unwrap();
    let err = RecordDataset::open(&rec).err().expect("NaN label");
    assert!(err.to_string().contains("not a class index"), "{err}");
}

/// Labels past what f32 holds exactly, headers pointing past the file and identity ranges that
/// overlap are errors, before anything is allocated for them (issue 20 reports a huge label
/// ending in "capacity overflow" or a multi-terabyte allocation).
#[test]
fn huge_labels_and_ranges_are_errors_not_allocations() {
    let tmp = tempfile::tempdir().unwrap();
    let rec = tmp.path().join("x.rec");
    let write = |records: &[(u64, IrHeader)]| {
        let mut w = RecordWriter::create(&rec).unwrap();
        for (key, h) in records {
            w.write(*key, &h.pack(b"img")).unwrap();
        }
        w.finish().unwrap();
    };
    let open = || RecordDataset::open(&rec).err().expect("a damaged file");

    let mut huge = IrHeader::image(0, 0);
    huge.label = 3.0e38;
    write(&[(0, huge)]);
    assert!(open().to_string().contains("not a class index"));

    // insightface's layout: record 0 says images are keys 1..2, identities keys 2..16e6.
    write(&[
        (0, IrHeader::with_labels(vec![2.0, 16_000_000.0])),
        (1, IrHeader::image(0, 1)),
    ]);
    assert!(open().to_string().contains("last key is 1"), "{}", open());

    // Two identities over one image, each claiming it: overlapping ranges.
    write(&[
        (0, IrHeader::with_labels(vec![2.0, 4.0])),
        (1, IrHeader::image(0, 1)),
        (2, IrHeader::with_labels(vec![1.0, 2.0])),
        (3, IrHeader::with_labels(vec![1.0, 2.0])),
    ]);
    assert!(open().to_string().contains("claim more"), "{}", open());
    // A range past the images.
    write(&[
        (0, IrHeader::with_labels(vec![2.0, 3.0])),
        (1, IrHeader::image(0, 1)),
        (2, IrHeader::with_labels(vec![1.0, 9.0e6])),
    ]);
    assert!(open().to_string().contains("inside 1..2"), "{}", open());
}

/// Pickles built to exhaust the reader: a 2 MB nest of lists (issue 20 reports such a nest
/// overflowing the stack) and a 3 MB file whose memo references would copy a megabyte a
/// million times. Both are errors, quickly.
#[test]
fn pickle_bombs_are_errors_not_crashes() {
    let mut nested = b"\x80\x02".to_vec();
    let n = 1_000_000;
    nested.extend(std::iter::repeat_n(b'(', n));
    nested.push(b']');
    nested.extend(std::iter::repeat_n(b'l', n));
    nested.push(b'.');
    let err = VerificationBin::parse(&nested).unwrap_err();
    assert!(err.contains("nested deeper"), "{err}");

    let mut copies = b"\x80\x02B".to_vec();
    copies.extend(1_000_000u32.to_le_bytes());
    copies.extend(std::iter::repeat_n(7u8, 1_000_000));
    copies.extend(b"q\x00](");
    for _ in 0..1_000_000 {
        copies.extend(b"h\x00");
    }
    copies.extend(b"e.");
    let started = std::time::Instant::now();
    let err = VerificationBin::parse(&copies).unwrap_err();
    assert!(err.contains("copy more than the file holds"), "{err}");
    assert!(started.elapsed().as_secs() < 5);
}

#[test]
fn bins_that_are_not_the_expected_pickle_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("x.bin");
    for (bytes, needle) in [
        (b"not a pickle".to_vec(), "opcode"),
        (vec![0x80, 4, b']', b'.'], "not a tuple"),
        (vec![0x80, 4, b']', b']', 0x86, b'.'], ""),
        (
            vec![0x80, 4, b']', b'(', b'K', 1, b'e', b']', 0x86, b'.'],
            "instead of bytes",
        ),
        (vec![0x80, 9], "protocol 9"),
        (vec![0x80, 4, b'C', 10, 1, 2], "truncated"),
    ] {
        std::fs::write(&path, &bytes).unwrap();
        match VerificationBin::read(&path) {
            Err(DataError::Bin { reason, .. }) => assert!(reason.contains(needle), "{reason}"),
            Ok(b) if needle.is_empty() => assert_eq!(b.num_pairs(), 0),
            other => panic!("{bytes:?}: {other:?}"),
        }
    }
    // Images and pairs disagree.
    let odd = VerificationBin {
        images: vec![vec![1]; 3],
        issame: vec![true],
    };
    std::fs::write(&path, odd.to_pickle()).unwrap();
    assert!(VerificationBin::read(&path)
        .unwrap_err()
        .to_string()
        .contains("3 images for 1 pairs"));
}

#[test]
fn malformed_pairs_files_name_the_line() {
    let cases = [
        ("", 1, "empty"),
        ("ten\t300\n", 1, "fold count"),
        ("1\t1\nAbel\t1\n", 2, "3 tab-separated"),
        ("1\t1\nAbel\t1\t0\nA\t1\tB\t2\n", 2, "positive integer"),
        (
            "1\t1\nAbel\t1\t2\nA\t1\tB\t2\nextra\n",
            4,
            "unexpected line",
        ),
    ];
    for (text, line, needle) in cases {
        let (l, reason) = LfwPairs::parse(text).unwrap_err();
        assert!(reason.contains(needle), "{text:?}: {reason}");
        assert!(
            l == line || line == 1 && l <= 1,
            "{text:?}: line {l}, expected {line}"
        );
    }
}

#[test]
fn the_loader_skips_bad_samples_when_asked_and_counts_them() {
    let tmp = tempfile::tempdir().unwrap();
    synthetic_folder(tmp.path(), 3, 4);
    std::fs::write(tmp.path().join("person_001/0001.jpg"), b"broken").unwrap();
    std::fs::write(tmp.path().join("person_002/0002.png"), b"broken too").unwrap();
    let config = LoaderConfig {
        batch_size: 4,
        drop_last: false,
        ..LoaderConfig::default()
    };
    // Without skip_bad the epoch stops with the error.
    let strict = Loader::new(
        ImageFolder::open(tmp.path()).unwrap(),
        Pipeline::insightface_minimal(),
        config.clone(),
    )
    .unwrap();
    assert!(strict.epoch(0).any(|b| b.is_err()));
    let lenient = Loader::new(
        ImageFolder::open(tmp.path()).unwrap(),
        Pipeline::insightface_minimal(),
        LoaderConfig {
            skip_bad: true,
            ..config
        },
    )
    .unwrap();
    let batches: Vec<_> = lenient.epoch(0).map(Result::unwrap).collect();
    let (kept, skipped): (usize, usize) = batches.iter().fold((0, 0), |(k, s), b| {
        (k + b.labels.len(), s + b.skipped.len())
    });
    assert_eq!((kept, skipped, lenient.skipped()), (10, 2, 2));
    let reasons: Vec<&String> = batches
        .iter()
        .flat_map(|b| b.skipped.iter().map(|s| &s.1))
        .collect();
    assert!(
        reasons.iter().all(|r| r.contains("cannot decode")),
        "{reasons:?}"
    );
}
