//! Face datasets behind one `FaceDataset` trait: identity-per-folder image trees, insightface's
//! RecordIO (`train.rec`/`.idx`, read memory-mapped and written), verification `.bin` files,
//! LFW's `pairs.txt`, and a procedural synthetic set that is the project's built-in default;
//! plus a multi-threaded loader that decodes, augments and batches into Burn tensors.

mod bin;
mod dataset;
mod error;
mod folder;
mod lfw;
mod loader;
mod merge;
mod modality;
pub mod recordio;
pub mod synthetic;

pub use bin::VerificationBin;
pub use dataset::{by_identity, decode, encode_png, images, FaceDataset, FaceSample};
pub use error::{DataError, Result};
pub use folder::{is_image, write_label_map, ImageFolder};
pub use lfw::{LfwPair, LfwPairs};
pub use loader::{shard_range, Batch, Epoch, Loader, LoaderConfig, Sampling};
pub use merge::{Merged, Subset};
pub use modality::{check_list, companion, plane_ranges, total_planes, write_companions, Modality};
pub use recordio::{
    pack_dataset, pack_folder, read_names, unpack_to_folder, IrHeader, RecordDataset, RecordFile,
    RecordWriter,
};
pub use synthetic::{
    render, verification_pair_indices, verification_pairs, Identity, RenderedFace, SyntheticConfig,
    SyntheticFaces,
};
