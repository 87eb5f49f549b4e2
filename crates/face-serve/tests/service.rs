//! The service end to end on loopback: every RPC, health and reflection, bad input answered with
//! INVALID_ARGUMENT (and the server still serving after it), limits, batching of concurrent
//! calls, deadlines and graceful shutdown. Real detector and model: RetinaFace MobileNet-0.25
//! and insightface's w600k_mbf with the registry photos (datasets/fetch_real.py).

use test_support::real_data as support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use face_serve::proto::face_service_client::FaceServiceClient;
use face_serve::proto::{self, face_input::Source};
use face_serve::{Limits, Pipeline};
use tonic::transport::Channel;
use tonic::Code;

type B = burn::backend::Flex;

fn limits() -> Limits {
    Limits {
        max_message_bytes: 4 << 20,
        max_image_side: 3200,
        max_faces: 3,
        max_top_k: 50,
        ..Limits::default()
    }
}

fn pipeline(cache: &std::path::Path) -> Arc<Pipeline> {
    let device = Default::default();
    let detector = face_detect::RetinaFace::<B>::load(
        &cache.join("models/retinaface_mnet025.pth"),
        face_detect::RetinaFaceConfig::default(),
        &device,
    )
    .expect("RetinaFace weights");
    let model = iresnet::import::import_file::<B>(
        &cache.join("models/w600k_mbf.onnx"),
        &iresnet::BackboneConfig::from_name("mbf").unwrap(),
        &device,
    )
    .expect("w600k_mbf");
    Pipeline::new(
        Box::new(detector),
        Box::new(eval::BurnEmbedder::new(model, device)),
        limits(),
    )
}

/// One server for the whole test binary, on its own thread and runtime.
fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let cache = support::real_data();
        let pipeline = pipeline(&cache);
        let dir = tempfile::tempdir().unwrap().keep();
        let gallery = Arc::new(
            face_search::Gallery::open(
                dir.join("gallery.db"),
                face_search::GalleryConfig::new(512),
            )
            .unwrap(),
        );
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let server = face_serve::FaceServer::new(pipeline, gallery, 0.3);
                face_serve::serve(listener, server, std::future::pending())
                    .await
                    .unwrap();
            });
        });
        rx.recv().unwrap()
    })
}

async fn client() -> FaceServiceClient<Channel> {
    FaceServiceClient::connect(format!("http://{}", server()))
        .await
        .unwrap()
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

fn photo(name: &str) -> Vec<u8> {
    let path: PathBuf = support::real_data().join("photos").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn png(image: &image::RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// The same photo smaller and re-compressed: the same person, other pixels.
fn degraded(bytes: &[u8]) -> Vec<u8> {
    let img = image::load_from_memory(bytes).unwrap().to_rgb8();
    let small = image::imageops::resize(
        &img,
        img.width() * 7 / 10,
        img.height() * 7 / 10,
        image::imageops::FilterType::Triangle,
    );
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 60)
        .encode_image(&small)
        .unwrap();
    jpeg
}

/// The embedding of the best face `Embed` finds in `image`.
async fn best_embedding(c: &mut FaceServiceClient<Channel>, image: Vec<u8>) -> Vec<f32> {
    let faces = c
        .embed(proto::EmbedRequest { image })
        .await
        .unwrap()
        .into_inner()
        .faces;
    faces[0].embedding.clone().unwrap().values
}

fn image_input(bytes: Vec<u8>) -> Option<proto::FaceInput> {
    Some(proto::FaceInput {
        source: Some(Source::Image(bytes)),
    })
}

fn embedding_input(values: Vec<f32>) -> Option<proto::FaceInput> {
    Some(proto::FaceInput {
        source: Some(Source::Embedding(proto::Embedding { values })),
    })
}

#[tokio::test]
async fn detect_and_embed_a_real_photo() {
    let mut c = client().await;
    let bytes = photo("Tom_Hanks_54745.png");
    let (w, h) = image::load_from_memory(&bytes)
        .unwrap()
        .to_rgb8()
        .dimensions();
    let faces = c
        .detect(proto::DetectRequest {
            image: bytes.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!faces.faces.is_empty());
    let best = &faces.faces[0];
    let b = best.r#box.as_ref().unwrap();
    // Boxes may overhang the border a little; the face's centre is inside.
    let (cx, cy) = ((b.x1 + b.x2) / 2.0, (b.y1 + b.y2) / 2.0);
    assert!(
        cx > 0.0 && cy > 0.0 && cx < w as f32 && cy < h as f32 && b.x2 > b.x1,
        "{b:?}"
    );
    assert_eq!(best.landmarks.len(), 5);
    assert!(best.score > 0.9);
    let embedded = c
        .embed(proto::EmbedRequest { image: bytes })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(embedded.faces.len(), faces.faces.len());
    let e = &embedded.faces[0].embedding.as_ref().unwrap().values;
    assert_eq!(e.len(), 512);
    let norm: f32 = e.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4);
}

#[tokio::test]
async fn faces_per_image_are_capped_and_say_so() {
    let mut c = client().await;
    // The Solvay conference photo has far more than the test server's 3 faces per image.
    let r = c
        .detect(proto::DetectRequest {
            image: photo("solvay_conference_1927.jpg"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.faces.len(), 3);
    assert!(r.truncated);
    assert!(r.faces.windows(2).all(|w| w[0].score >= w[1].score));
}

#[tokio::test]
async fn verify_images_and_embeddings() {
    let mut c = client().await;
    let hanks = photo("Tom_Hanks_54745.png");
    let same = c
        .verify(proto::VerifyRequest {
            a: image_input(hanks.clone()),
            b: image_input(degraded(&hanks)),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(same.same, "{same:?}");
    assert_eq!(same.threshold, 0.3);
    let other = c
        .verify(proto::VerifyRequest {
            a: image_input(hanks.clone()),
            b: image_input(photo("newton.png")),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!other.same, "{other:?}");
    assert!(other.score < same.score);
    // An embedding against the image it came from scores ~1.
    let e = best_embedding(&mut c, hanks.clone()).await;
    let r = c
        .verify(proto::VerifyRequest {
            a: embedding_input(e.iter().map(|x| x * 3.0).collect()),
            b: image_input(hanks),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.score > 0.999, "{r:?}");
}

#[tokio::test]
async fn enroll_search_and_delete() {
    let mut c = client().await;
    let hanks = photo("Tom_Hanks_54745.png");
    let newton = photo("newton.png");
    let enroll = |identity: &str, face| proto::EnrollRequest {
        identity: identity.into(),
        metadata: format!("{{\"who\":\"{identity}\"}}"),
        face,
    };
    let id_hanks = c
        .enroll(enroll("hanks-esd", image_input(hanks.clone())))
        .await
        .unwrap()
        .into_inner()
        .face_id;
    let id_newton = c
        .enroll(enroll("newton-esd", image_input(newton.clone())))
        .await
        .unwrap()
        .into_inner()
        .face_id;
    // Enrol by embedding too.
    let e = best_embedding(&mut c, newton.clone()).await;
    let id_newton2 = c
        .enroll(enroll("newton-esd", embedding_input(e)))
        .await
        .unwrap()
        .into_inner()
        .face_id;
    let search = |face| proto::SearchRequest { face, top_k: 5 };
    let r = c
        .search(search(image_input(degraded(&hanks))))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.matches[0].face_id, id_hanks);
    assert_eq!(r.matches[0].identity, "hanks-esd");
    assert_eq!(r.matches[0].metadata, "{\"who\":\"hanks-esd\"}");
    assert!(r.matches.windows(2).all(|w| w[0].score >= w[1].score));
    let r = c
        .search(search(image_input(newton.clone())))
        .await
        .unwrap()
        .into_inner();
    let top2: Vec<i64> = r.matches[..2].iter().map(|m| m.face_id).collect();
    assert!(
        top2.contains(&id_newton) && top2.contains(&id_newton2),
        "{r:?}"
    );
    // Delete one face, then the whole identity.
    let d = |target| proto::DeleteRequest {
        target: Some(target),
    };
    use proto::delete_request::Target;
    assert_eq!(
        c.delete(d(Target::FaceId(id_hanks)))
            .await
            .unwrap()
            .into_inner()
            .deleted,
        1
    );
    assert_eq!(
        c.delete(d(Target::FaceId(id_hanks)))
            .await
            .unwrap()
            .into_inner()
            .deleted,
        0
    );
    assert_eq!(
        c.delete(d(Target::Identity("newton-esd".into())))
            .await
            .unwrap()
            .into_inner()
            .deleted,
        2
    );
    let r = c
        .search(search(image_input(newton)))
        .await
        .unwrap()
        .into_inner();
    assert!(r
        .matches
        .iter()
        .all(|m| ![id_hanks, id_newton, id_newton2].contains(&m.face_id)));
}

/// The reason of a refusal that must be INVALID_ARGUMENT.
fn invalid<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> String {
    let e = r.expect_err("should be refused");
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    e.message().to_string()
}

#[tokio::test]
async fn bad_input_is_invalid_argument_and_the_server_keeps_serving() {
    let mut c = client().await;
    let blank = png(&image::RgbImage::from_pixel(
        200,
        150,
        image::Rgb([128, 128, 128]),
    ));
    let wide = png(&image::RgbImage::new(3300, 8));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "empty image"),
        (
            "not an image",
            b"definitely not a picture".to_vec(),
            "not an image",
        ),
        (
            "truncated PNG",
            blank[..blank.len() / 2].to_vec(),
            "not an image",
        ),
        ("too wide", wide, "at most 3200"),
    ];
    for (what, bytes, reason) in &cases {
        let image = bytes.clone();
        let message = invalid(c.detect(proto::DetectRequest { image }).await);
        assert!(message.contains(reason), "{what}: {message}");
        let image = bytes.clone();
        invalid(c.embed(proto::EmbedRequest { image }).await);
    }
    // No face: an empty answer where a list is asked for, an error where one face is needed.
    let image = blank.clone();
    let none = c
        .embed(proto::EmbedRequest { image })
        .await
        .unwrap()
        .into_inner();
    assert!(none.faces.is_empty() && !none.truncated);
    let message = invalid(
        c.verify(proto::VerifyRequest {
            a: image_input(blank.clone()),
            b: image_input(photo("newton.png")),
        })
        .await,
    );
    assert!(message.contains("a: no face found"), "{message}");
    let enroll = |identity: &str, face| proto::EnrollRequest {
        identity: identity.into(),
        metadata: String::new(),
        face,
    };
    invalid(c.enroll(enroll("x", image_input(blank))).await);
    // Embeddings: wrong length, zero, NaN; missing inputs; bad identity; top_k over the limit.
    let search = |values, top_k| proto::SearchRequest {
        face: embedding_input(values),
        top_k,
    };
    for values in [vec![0.1; 511], vec![0.0; 512], vec![f32::NAN; 512]] {
        invalid(c.search(search(values, 3)).await);
    }
    invalid(c.verify(proto::VerifyRequest { a: None, b: None }).await);
    invalid(c.enroll(enroll(" ", embedding_input(vec![1.0; 512]))).await);
    let message = invalid(c.search(search(vec![1.0; 512], 51)).await);
    assert!(message.contains("limit of 50"), "{message}");
    invalid(c.delete(proto::DeleteRequest { target: None }).await);
    // Over the message limit (4 MiB on the test server).
    let image = vec![7u8; 5 << 20];
    c.detect(proto::DetectRequest { image })
        .await
        .expect_err("a message past the limit");
    // Still serving.
    let r = c
        .detect(proto::DetectRequest {
            image: photo("Tom_Hanks_54745.png"),
        })
        .await
        .unwrap();
    assert!(!r.into_inner().faces.is_empty());
}

#[tokio::test]
async fn concurrent_embeds_answer_like_single_calls() {
    let bytes = photo("Tom_Hanks_54745.png");
    let mut c = client().await;
    let single = c
        .embed(proto::EmbedRequest {
            image: bytes.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let calls = (0..8).map(|_| {
        let bytes = bytes.clone();
        async move {
            let mut c = client().await;
            c.embed(proto::EmbedRequest { image: bytes })
                .await
                .unwrap()
                .into_inner()
        }
    });
    for r in futures_join_all(calls).await {
        assert_eq!(r.faces.len(), single.faces.len());
        let (a, b) = (
            &r.faces[0].embedding.as_ref().unwrap().values,
            &single.faces[0].embedding.as_ref().unwrap().values,
        );
        let cos: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        assert!(cos > 0.9999, "batched embedding differs: cosine {cos}");
    }
}

/// Runs futures concurrently on this runtime (no extra dependency).
async fn futures_join_all<F: std::future::Future + Send + 'static>(
    fs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_client_deadline_is_enforced() {
    let mut c = client().await;
    let mut request = tonic::Request::new(proto::EmbedRequest {
        image: photo("solvay_conference_1927.jpg"),
    });
    request.set_timeout(Duration::from_millis(1));
    let code = c
        .embed(request)
        .await
        .expect_err("past its deadline")
        .code();
    assert!(
        matches!(code, Code::DeadlineExceeded | Code::Cancelled),
        "{code:?}"
    );
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    let channel = Channel::from_shared(format!("http://{}", server()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "arcface.v1.FaceService"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "nope".into(),
        })
        .await;
    assert_eq!(unknown.unwrap_err().code(), Code::NotFound);

    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("{response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"arcface.v1.FaceService".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );
}

#[tokio::test]
async fn shutdown_is_graceful() {
    let cache = support::real_data();
    let dir = tempfile::tempdir().unwrap();
    let gallery = Arc::new(
        face_search::Gallery::open(
            dir.path().join("g.db"),
            face_search::GalleryConfig::new(512),
        )
        .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(face_serve::serve(
        listener,
        face_serve::FaceServer::new(pipeline(&cache), gallery, 0.3),
        async {
            let _ = stopped.await;
        },
    ));
    let mut c = FaceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let call = tokio::spawn(async move {
        c.embed(proto::EmbedRequest {
            image: photo("Tom_Hanks_54745.png"),
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    stop.send(()).unwrap();
    // The request in flight still completes, and the server returns cleanly.
    assert!(call.await.unwrap().is_ok());
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(FaceServiceClient::connect(format!("http://{addr}"))
        .await
        .is_err());
}
