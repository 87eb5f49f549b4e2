//! LFW's `pairs.txt` (View 2): a header `folds<TAB>n`, then per fold `n` matched pairs
//! (`name<TAB>i<TAB>j`) and `n` mismatched ones (`name1<TAB>i<TAB>name2<TAB>j`), over an image
//! directory `name/name_0001.jpg`.

use std::path::{Path, PathBuf};

use crate::error::{io, DataError, Result};

/// One pair, by person name and image number (1-based, as LFW numbers them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LfwPair {
    /// The first face: person and image number.
    pub first: (String, u32),
    /// The second face: person and image number.
    pub second: (String, u32),
    /// Whether both are the same person.
    pub same: bool,
    /// 0-based fold.
    pub fold: usize,
}

impl LfwPair {
    /// `dir/name/name_0001.jpg` for both images.
    pub fn paths(&self, images: &Path) -> (PathBuf, PathBuf) {
        let path = |(name, n): &(String, u32)| images.join(name).join(format!("{name}_{n:04}.jpg"));
        (path(&self.first), path(&self.second))
    }
}

/// A parsed `pairs.txt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LfwPairs {
    /// Folds in the file (LFW: 10).
    pub folds: usize,
    /// Pairs per fold and kind (LFW: 300 matched, 300 mismatched).
    pub per_fold: usize,
    /// Every pair, fold by fold.
    pub pairs: Vec<LfwPair>,
}

impl LfwPairs {
    /// Reads a `pairs.txt` in LFW's format.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        Self::parse(&text).map_err(|(line, reason)| DataError::Pairs {
            path: path.to_path_buf(),
            line,
            reason,
        })
    }

    /// Parses the text; errors carry the 1-based line.
    pub fn parse(text: &str) -> std::result::Result<Self, (usize, String)> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let (_, header) = lines.next().ok_or((1, "empty file".to_string()))?;
        let head: Vec<&str> = header.split_whitespace().collect();
        let (folds, per_fold) = match head.as_slice() {
            [f, n] => (
                f.parse::<usize>()
                    .map_err(|e| (1, format!("fold count {f:?}: {e}")))?,
                n.parse::<usize>()
                    .map_err(|e| (1, format!("pairs per fold {n:?}: {e}")))?,
            ),
            _ => return Err((1, format!("header {header:?} is not `folds<TAB>pairs`"))),
        };
        if folds == 0 || per_fold == 0 || folds.saturating_mul(per_fold) > 10_000_000 {
            return Err((
                1,
                format!("implausible header: {folds} folds of {per_fold}"),
            ));
        }
        let number = |s: &str, line: usize| {
            s.parse::<u32>().ok().filter(|&n| n > 0).ok_or((
                line,
                format!("image number {s:?} is not a positive integer"),
            ))
        };
        let mut pairs = Vec::with_capacity(2 * folds * per_fold);
        for fold in 0..folds {
            for k in 0..2 * per_fold {
                let same = k < per_fold;
                let (n, line) = lines.next().ok_or((
                    0,
                    format!(
                        "file ends in fold {} before its {} pairs",
                        fold + 1,
                        2 * per_fold
                    ),
                ))?;
                let n = n + 1;
                let f: Vec<&str> = line.split('\t').map(str::trim).collect();
                let pair = match (same, f.as_slice()) {
                    (true, [name, i, j]) => LfwPair {
                        first: (name.to_string(), number(i, n)?),
                        second: (name.to_string(), number(j, n)?),
                        same,
                        fold,
                    },
                    (false, [a, i, b, j]) => LfwPair {
                        first: (a.to_string(), number(i, n)?),
                        second: (b.to_string(), number(j, n)?),
                        same,
                        fold,
                    },
                    _ => {
                        return Err((
                            n,
                            format!(
                                "expected a {} pair with {} tab-separated fields, got {line:?}",
                                if same { "matched" } else { "mismatched" },
                                if same { 3 } else { 4 }
                            ),
                        ))
                    }
                };
                pairs.push(pair);
            }
        }
        if let Some((n, extra)) = lines.next() {
            return Err((
                n + 1,
                format!("unexpected line after the last fold: {extra:?}"),
            ));
        }
        Ok(Self {
            folds,
            per_fold,
            pairs,
        })
    }

    /// The pairs of one fold (0-based).
    pub fn fold(&self, fold: usize) -> impl Iterator<Item = &LfwPair> {
        self.pairs.iter().filter(move |p| p.fold == fold)
    }

    /// Every image path the pairs need that is missing under `images`.
    pub fn missing_images(&self, images: &Path) -> Vec<PathBuf> {
        let mut missing: Vec<PathBuf> = self
            .pairs
            .iter()
            .flat_map(|p| {
                let (a, b) = p.paths(images);
                [a, b]
            })
            .filter(|p| !p.exists())
            .collect();
        missing.sort();
        missing.dedup();
        missing
    }
}
