//! The shape arithmetic of one 2-D convolution (NCHW input, OIHW weights), checked once so the
//! kernels can index without bounds surprises.

use thiserror::Error;

/// Why a set of shapes and options is not a convolution the kernels run.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum GeomError {
    /// The weights' input channels times the groups do not give the input's channels, or the
    /// groups do not divide the output channels.
    #[error("weights {weight:?} with {groups} groups do not fit an input of {channels} channels")]
    Channels {
        /// The weight shape `[out, in / groups, kh, kw]`.
        weight: [usize; 4],
        /// The number of groups.
        groups: usize,
        /// The input's channels.
        channels: usize,
    },
    /// The (dilated) kernel is larger than the padded input, or a stride/dilation is zero.
    #[error("a {kernel:?} kernel (dilation {dilation:?}, stride {stride:?}) leaves no output on a padded {padded:?} input")]
    NoOutput {
        /// Kernel height and width.
        kernel: [usize; 2],
        /// Dilation.
        dilation: [usize; 2],
        /// Stride.
        stride: [usize; 2],
        /// Input height and width with padding.
        padded: [usize; 2],
    },
}

/// One convolution's geometry; `out_hw` is derived as PyTorch does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dGeom {
    /// Input shape `[n, c, h, w]`.
    pub input: [usize; 4],
    /// Weight shape `[o, c / groups, kh, kw]`.
    pub weight: [usize; 4],
    /// Stride (rows, columns).
    pub stride: [usize; 2],
    /// Zero padding on each side (rows, columns).
    pub padding: [usize; 2],
    /// Dilation (rows, columns).
    pub dilation: [usize; 2],
    /// Channel groups (1: dense; the channel count with one filter each: depthwise).
    pub groups: usize,
    /// Output height and width.
    pub out_hw: [usize; 2],
}

impl Conv2dGeom {
    /// Checks that the shapes and options describe a convolution with at least one output pixel.
    pub fn new(
        input: [usize; 4],
        weight: [usize; 4],
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        groups: usize,
    ) -> Result<Self, GeomError> {
        let [_, c, h, w] = input;
        let [o, cpg, kh, kw] = weight;
        if groups == 0 || cpg * groups != c || o % groups != 0 || o == 0 {
            return Err(GeomError::Channels {
                weight,
                groups,
                channels: c,
            });
        }
        let padded = [h + 2 * padding[0], w + 2 * padding[1]];
        let reach = [
            dilation[0] * kh.saturating_sub(1) + 1,
            dilation[1] * kw.saturating_sub(1) + 1,
        ];
        if kh == 0 || kw == 0 || stride.contains(&0) || dilation.contains(&0) {
            return Err(GeomError::NoOutput {
                kernel: [kh, kw],
                dilation,
                stride,
                padded,
            });
        }
        if reach[0] > padded[0] || reach[1] > padded[1] {
            return Err(GeomError::NoOutput {
                kernel: [kh, kw],
                dilation,
                stride,
                padded,
            });
        }
        let out_hw = [
            (padded[0] - reach[0]) / stride[0] + 1,
            (padded[1] - reach[1]) / stride[1] + 1,
        ];
        Ok(Self {
            input,
            weight,
            stride,
            padding,
            dilation,
            groups,
            out_hw,
        })
    }

    /// Output shape `[n, o, oh, ow]`.
    pub fn output(&self) -> [usize; 4] {
        [
            self.input[0],
            self.weight[0],
            self.out_hw[0],
            self.out_hw[1],
        ]
    }

    /// One filter per channel, one channel per group: the layers MobileFaceNet is made of, which
    /// a matrix product serves badly.
    pub fn is_depthwise(&self) -> bool {
        self.weight[1] == 1 && self.groups == self.input[1] && self.weight[0] == self.groups
    }

    /// A 1x1, stride-1, unpadded convolution: the input already is the im2col matrix.
    pub fn is_pointwise(&self) -> bool {
        self.weight[2] == 1
            && self.weight[3] == 1
            && self.stride == [1, 1]
            && self.padding == [0, 0]
    }

    /// Every kernel tap, `(ki, kj)` in row-major order (the weights' order), with the outputs whose
    /// reads of it fall inside the input: the one loop header the kernels share.
    pub(crate) fn taps(&self) -> impl Iterator<Item = KernelTap> + '_ {
        let kw = self.weight[3];
        (0..self.weight[2] * kw).map(move |index| KernelTap {
            index,
            rows: self.valid(0, index / kw),
            cols: self.valid(1, index % kw),
        })
    }

    /// The input rows and columns tap `(ki, kj)` reads for output rows/columns `0..out`:
    /// `index = out * stride + k * dilation - padding`, and the range of outputs for which it
    /// falls inside the input.
    pub(crate) fn valid(&self, axis: usize, k: usize) -> Tap {
        let size = self.input[2 + axis] as isize;
        let (s, d, p) = (
            self.stride[axis] as isize,
            self.dilation[axis] as isize,
            self.padding[axis] as isize,
        );
        let offset = k as isize * d - p;
        let out = self.out_hw[axis] as isize;
        // first output with out * s + offset >= 0, first with out * s + offset >= size.
        let lo = if offset >= 0 {
            0
        } else {
            (-offset + s - 1) / s
        };
        let hi = if size - offset <= 0 {
            0
        } else {
            ((size - offset + s - 1) / s).min(out)
        };
        Tap {
            lo: lo.min(out) as usize,
            hi: hi.max(lo.min(out)) as usize,
            offset,
            stride: s as usize,
        }
    }
}

/// One kernel tap and the outputs that read inside the input through it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KernelTap {
    /// `ki * kw + kj`: the tap's place in a filter's weights (and in an im2col row group).
    pub index: usize,
    /// Output rows.
    pub rows: Tap,
    /// Output columns.
    pub cols: Tap,
}

impl KernelTap {
    /// The tap reads nothing inside the input.
    pub fn is_empty(&self) -> bool {
        self.rows.lo >= self.rows.hi || self.cols.lo >= self.cols.hi
    }
}

/// Which outputs of one kernel tap read the input, along one axis.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tap {
    /// First output that reads inside the input.
    pub lo: usize,
    /// One past the last.
    pub hi: usize,
    /// Input index of output 0 (may be negative).
    pub offset: isize,
    /// Stride along this axis.
    pub stride: usize,
}

impl Tap {
    /// Input index of output `o` (only for `lo <= o < hi`).
    #[inline(always)]
    pub fn input(&self, o: usize) -> usize {
        (o as isize * self.stride as isize + self.offset) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_size_matches_pytorch_formula() {
        let g = Conv2dGeom::new([2, 4, 7, 9], [6, 2, 3, 3], [2, 1], [1, 0], [1, 2], 2).unwrap();
        // floor((7 + 2 - 3) / 2) + 1 = 4; floor((9 - 5) / 1) + 1 = 5
        assert_eq!(g.out_hw, [4, 5]);
        assert!(!g.is_depthwise());
        assert!(Conv2dGeom::new([1, 3, 2, 2], [1, 3, 3, 3], [1, 1], [0, 0], [1, 1], 1).is_err());
        assert!(Conv2dGeom::new([1, 4, 5, 5], [4, 2, 3, 3], [1, 1], [0, 0], [1, 1], 1).is_err());
    }

    #[test]
    fn taps_cover_exactly_the_inside() {
        let g = Conv2dGeom::new([1, 1, 5, 5], [1, 1, 3, 3], [2, 2], [1, 1], [1, 1], 1).unwrap();
        for k in 0..3 {
            let t = g.valid(0, k);
            for o in 0..g.out_hw[0] {
                let i = o as isize * 2 + k as isize - 1;
                assert_eq!(
                    (t.lo..t.hi).contains(&o),
                    (0..5).contains(&i),
                    "k {k} o {o}"
                );
            }
        }
    }
}
