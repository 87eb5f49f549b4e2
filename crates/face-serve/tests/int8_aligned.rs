//! The service as `face-serve-int8` runs it, with no Burn in the serving path: the int8 engine
//! (insightface's w600k_mbf quantised on real aligned faces) and the `AlignedFaces` detector.
//! Enrol and search by aligned face, verify, and a photo that is not an aligned face refused.

use std::sync::Arc;

use face_serve::proto::face_service_client::FaceServiceClient;
use face_serve::proto::{self, face_input::Source};
use face_serve::{Limits, Pipeline};
use test_support::real_data;

type B = burn::backend::Flex;

fn png(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn face(bytes: Vec<u8>) -> Option<proto::FaceInput> {
    Some(proto::FaceInput {
        source: Some(Source::Image(bytes)),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_int8_model_serves_aligned_faces() {
    let cache = real_data::real_data();
    let mut aligned: Vec<_> = std::fs::read_dir(cache.join("faces"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    aligned.sort();
    assert!(aligned.len() >= 6, "{} aligned faces", aligned.len());
    let pixels: Vec<Vec<u8>> = aligned
        .iter()
        .map(|p| image::open(p).unwrap().to_rgb8().into_raw())
        .collect();
    let device = Default::default();
    let model = iresnet::import::import_file::<B>(
        &cache.join("models/w600k_mbf.onnx"),
        &iresnet::BackboneConfig::from_name("mbf").unwrap(),
        &device,
    )
    .unwrap();
    let graph = quantize::Graph::from_backbone(&model).unwrap();
    let calibration: Vec<&[u8]> = pixels.iter().map(Vec::as_slice).collect();
    let engine = quantize::quantize(&graph, &calibration, Default::default())
        .unwrap()
        .engine()
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let gallery = face_search::Gallery::open(
        dir.path().join("g.db"),
        face_search::GalleryConfig::new(512),
    )
    .unwrap();
    let pipeline = Pipeline::new(
        Box::new(face_detect::AlignedFaces),
        Box::new(engine),
        Limits::default(),
    );
    let server = face_serve::FaceServer::new(pipeline, Arc::new(gallery), 0.3);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(face_serve::serve(listener, server, async {
        let _ = stopped.await;
    }));
    let mut c = FaceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();

    for (k, path) in aligned.iter().take(4).enumerate() {
        let request = proto::EnrollRequest {
            identity: format!("person-{k}"),
            metadata: String::new(),
            face: face(png(path)),
        };
        c.enroll(request).await.unwrap();
    }
    for (k, path) in aligned.iter().take(4).enumerate() {
        let request = proto::SearchRequest {
            face: face(png(path)),
            top_k: 2,
        };
        let matches = c.search(request).await.unwrap().into_inner().matches;
        assert_eq!(matches[0].identity, format!("person-{k}"));
        assert!(matches[0].score > 0.99, "{}", matches[0].score);
        assert!(matches[1].score < 0.6, "{}", matches[1].score);
    }
    let verify = proto::VerifyRequest {
        a: face(png(&aligned[0])),
        b: face(png(&aligned[1])),
    };
    assert!(!c.verify(verify).await.unwrap().into_inner().same);
    // A photo is not an aligned face: no face, said as such.
    let photo = png(&cache.join("photos/t1.jpg"));
    let err = c
        .search(proto::SearchRequest {
            face: face(photo),
            top_k: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("no face"), "{}", err.message());
    stop.send(()).unwrap();
    serving.await.unwrap().unwrap();
}
