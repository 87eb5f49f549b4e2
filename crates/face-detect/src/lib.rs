//! Face detection with five landmarks behind a small `FaceDetector` trait: RetinaFace
//! (MobileNet-0.25) in Burn, loading the public `mobilenet0.25_Final.pth` weights, and SCRFD,
//! insightface's default detector, run on Burn from insightface's own ONNX files.
//!
//! ```no_run
//! use face_detect::{FaceDetector, RetinaFace, RetinaFaceConfig};
//! type B = burn::backend::Flex;
//! let detector = RetinaFace::<B>::load(
//!     "datasets/cache/models/retinaface_mnet025.pth".as_ref(),
//!     RetinaFaceConfig::default(),
//!     &Default::default(),
//! )?;
//! let photo = image::open("group.jpg").unwrap().to_rgb8();
//! for face in detector.detect(&photo)? {
//!     println!("{:?} {:.3}", face.bbox, face.score);
//! }
//! # Ok::<(), face_detect::DetectError>(())
//! ```

mod detection;
#[cfg(feature = "retinaface")]
mod detector;
mod error;
#[cfg(feature = "retinaface")]
mod net;
#[cfg(feature = "scrfd")]
mod onnx_net;
#[cfg(feature = "scrfd")]
mod resize;
#[cfg(feature = "scrfd")]
mod scrfd;
#[cfg(feature = "retinaface")]
mod weights;

pub use detection::{AlignedFaces, Detection, FaceDetector};
#[cfg(feature = "retinaface")]
pub use detector::{num_priors, priors, RetinaFace, RetinaFaceConfig};
pub use error::DetectError;
pub use face_align::{BBox, Landmarks, Point};
#[cfg(feature = "retinaface")]
pub use net::{RetinaFaceNet, ANCHORS};
#[cfg(feature = "scrfd")]
pub use resize::resize_linear;
#[cfg(feature = "scrfd")]
pub use scrfd::{Scrfd, ScrfdConfig};
