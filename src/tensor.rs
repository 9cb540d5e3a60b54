//! Host-side tensors: the element types the whole crate speaks and a plain
//! dense row-major array that crosses into and out of PJRT.
//!
//! This module owns no device state and knows nothing of PJRT or the graph;
//! both of those map their own notions onto [`DType`].

use std::fmt;

/// Element types used by our programs. Kept deliberately small: each one has
/// a StableHLO spelling, a PJRT buffer type and a host representation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    /// Double precision: used by the gradient checks, where f32 finite
    /// differences would be too noisy to be a sharp test.
    F64,
    BF16,
    I32,
    U32,
    /// Unsigned bytes: grey-level images travel to the device as these
    /// (the programs convert and normalize them; 4x fewer bytes than f32).
    U8,
    /// Booleans, one byte each on the host (0 or 1), `i1` in StableHLO.
    Pred,
}

impl DType {
    /// Bytes per element in a dense host array.
    pub const fn size_bytes(self) -> usize {
        match self {
            DType::F64 => 8,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::BF16 => 2,
            DType::U8 | DType::Pred => 1,
        }
    }

    /// The element type as StableHLO spells it (`tensor<2x3xf32>`).
    pub const fn mlir_name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
            DType::U32 => "ui32",
            DType::U8 => "ui8",
            DType::Pred => "i1",
        }
    }

    pub const fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::BF16)
    }

    pub const fn is_integer(self) -> bool {
        matches!(self, DType::I32 | DType::U32 | DType::U8)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mlir_name())
    }
}

/// Why a host tensor could not be built or read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TensorError {
    #[error("tensor of shape {dims:?} and type {dtype} needs {expected} bytes, got {actual}")]
    SizeMismatch { dtype: DType, dims: Vec<i64>, expected: usize, actual: usize },
    #[error("negative dimension in shape {dims:?}")]
    NegativeDim { dims: Vec<i64> },
    #[error("tensor holds {actual}, asked for {wanted}")]
    WrongType { actual: DType, wanted: DType },
}

/// A dense, row-major (C order) array on the host.
///
/// Invariant: `bytes.len() == dtype.size_bytes() * product(dims)`, checked by
/// every constructor, so code that hands a `HostTensor` to the device never
/// has to re-check it.
#[derive(Clone, PartialEq)]
pub struct HostTensor {
    dtype: DType,
    dims: Vec<i64>,
    bytes: Vec<u8>,
}

impl fmt::Debug for HostTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostTensor<{}{:?}>({} bytes)", self.dtype, self.dims, self.bytes.len())
    }
}

/// Number of elements in a shape; errors on a negative dimension.
pub fn element_count(dims: &[i64]) -> Result<usize, TensorError> {
    dims.iter().try_fold(1usize, |acc, &d| usize::try_from(d).map(|d| acc * d).map_err(|_| TensorError::NegativeDim { dims: dims.to_vec() }))
}

impl HostTensor {
    /// Builds a tensor from raw little-endian bytes, checking their length.
    pub fn from_bytes(dtype: DType, dims: &[i64], bytes: Vec<u8>) -> Result<Self, TensorError> {
        let expected = element_count(dims)? * dtype.size_bytes();
        if bytes.len() != expected {
            return Err(TensorError::SizeMismatch { dtype, dims: dims.to_vec(), expected, actual: bytes.len() });
        }
        Ok(HostTensor { dtype, dims: dims.to_vec(), bytes })
    }

    pub fn from_f32(dims: &[i64], values: &[f32]) -> Result<Self, TensorError> {
        Self::from_bytes(DType::F32, dims, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    pub fn from_f64(dims: &[i64], values: &[f64]) -> Result<Self, TensorError> {
        Self::from_bytes(DType::F64, dims, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    pub fn from_i32(dims: &[i64], values: &[i32]) -> Result<Self, TensorError> {
        Self::from_bytes(DType::I32, dims, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    pub fn from_u32(dims: &[i64], values: &[u32]) -> Result<Self, TensorError> {
        Self::from_bytes(DType::U32, dims, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    pub fn from_u8(dims: &[i64], values: &[u8]) -> Result<Self, TensorError> {
        Self::from_bytes(DType::U8, dims, values.to_vec())
    }

    pub fn from_bf16(dims: &[i64], values: &[half::bf16]) -> Result<Self, TensorError> {
        Self::from_bytes(DType::BF16, dims, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    pub fn from_pred(dims: &[i64], values: &[bool]) -> Result<Self, TensorError> {
        Self::from_bytes(DType::Pred, dims, values.iter().map(|&v| v as u8).collect())
    }

    pub fn scalar_f32(v: f32) -> Self {
        HostTensor { dtype: DType::F32, dims: vec![], bytes: v.to_le_bytes().to_vec() }
    }

    pub fn scalar_i32(v: i32) -> Self {
        HostTensor { dtype: DType::I32, dims: vec![], bytes: v.to_le_bytes().to_vec() }
    }

    pub fn scalar_u32(v: u32) -> Self {
        HostTensor { dtype: DType::U32, dims: vec![], bytes: v.to_le_bytes().to_vec() }
    }

    /// All-zero tensor of the given type and shape.
    pub fn zeros(dtype: DType, dims: &[i64]) -> Result<Self, TensorError> {
        let n = element_count(dims)? * dtype.size_bytes();
        Ok(HostTensor { dtype, dims: dims.to_vec(), bytes: vec![0; n] })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn dims(&self) -> &[i64] {
        &self.dims
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    pub fn element_count(&self) -> usize {
        self.bytes.len() / self.dtype.size_bytes()
    }

    fn expect(&self, wanted: DType) -> Result<(), TensorError> {
        if self.dtype == wanted { Ok(()) } else { Err(TensorError::WrongType { actual: self.dtype, wanted }) }
    }

    pub fn to_f32(&self) -> Result<Vec<f32>, TensorError> {
        match self.dtype {
            DType::BF16 => Ok(self.to_bf16()?.into_iter().map(f32::from).collect()),
            _ => {
                self.expect(DType::F32)?;
                Ok(self.bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
            }
        }
    }

    /// Values as f64, converting from any float type.
    pub fn to_f64(&self) -> Result<Vec<f64>, TensorError> {
        match self.dtype {
            DType::F64 => Ok(self.bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("chunks of 8"))).collect()),
            DType::F32 | DType::BF16 => Ok(self.to_f32()?.into_iter().map(f64::from).collect()),
            _ => Err(TensorError::WrongType { actual: self.dtype, wanted: DType::F64 }),
        }
    }

    pub fn to_bf16(&self) -> Result<Vec<half::bf16>, TensorError> {
        self.expect(DType::BF16)?;
        Ok(self.bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]])).collect())
    }

    pub fn to_i32(&self) -> Result<Vec<i32>, TensorError> {
        self.expect(DType::I32)?;
        Ok(self.bytes.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    pub fn to_u32(&self) -> Result<Vec<u32>, TensorError> {
        self.expect(DType::U32)?;
        Ok(self.bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    pub fn to_u8(&self) -> Result<Vec<u8>, TensorError> {
        self.expect(DType::U8)?;
        Ok(self.bytes.clone())
    }

    pub fn to_pred(&self) -> Result<Vec<bool>, TensorError> {
        self.expect(DType::Pred)?;
        Ok(self.bytes.iter().map(|&b| b != 0).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_type() {
        let t = HostTensor::from_f32(&[2, 2], &[1.0, -2.5, 3.0, 0.0]).unwrap();
        assert_eq!(t.to_f32().unwrap(), vec![1.0, -2.5, 3.0, 0.0]);
        let t = HostTensor::from_i32(&[3], &[-1, 0, 7]).unwrap();
        assert_eq!(t.to_i32().unwrap(), vec![-1, 0, 7]);
        let t = HostTensor::from_u8(&[3], &[0, 128, 255]).unwrap();
        assert_eq!(t.to_u8().unwrap(), vec![0, 128, 255]);
        let t = HostTensor::from_pred(&[2], &[true, false]).unwrap();
        assert_eq!(t.to_pred().unwrap(), vec![true, false]);
        let t = HostTensor::from_bf16(&[1], &[half::bf16::from_f32(1.5)]).unwrap();
        assert_eq!(t.to_f32().unwrap(), vec![1.5]);
    }

    #[test]
    fn rejects_wrong_length_and_type() {
        let err = HostTensor::from_bytes(DType::F32, &[2, 3], vec![0; 20]).unwrap_err();
        assert_eq!(err, TensorError::SizeMismatch { dtype: DType::F32, dims: vec![2, 3], expected: 24, actual: 20 });
        let t = HostTensor::from_i32(&[1], &[1]).unwrap();
        assert!(matches!(t.to_f32(), Err(TensorError::WrongType { .. })));
        assert!(HostTensor::zeros(DType::F32, &[-1]).is_err());
    }
}
