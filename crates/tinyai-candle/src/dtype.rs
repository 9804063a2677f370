//! Element types: `.tmai` → candle.

use candle_core::DType as CandleDType;
use tinyai_format::DType;

/// The candle dtype a `.tmai` tensor of `dtype` is read as, or `None` when
/// candle has no such type (i8, u16, u64, bool, f8 e5m2, packed i4, GGML
/// block types, opaque and mixed bytes).
#[must_use]
pub fn candle_dtype(dtype: DType) -> Option<CandleDType> {
    Some(match dtype {
        DType::F32 => CandleDType::F32,
        DType::F16 => CandleDType::F16,
        DType::BF16 => CandleDType::BF16,
        DType::F64 => CandleDType::F64,
        DType::F8E4M3 => CandleDType::F8E4M3,
        DType::I16 => CandleDType::I16,
        DType::I32 => CandleDType::I32,
        DType::I64 => CandleDType::I64,
        DType::U8 => CandleDType::U8,
        DType::U32 => CandleDType::U32,
        _ => return None,
    })
}

/// Whether a stored tensor of `stored` may be handed out as `requested`:
/// the same type, or a conversion between floating-point types (bf16 weights
/// read as f32, say). Integer ↔ float conversions are refused: a model asking
/// for f32 where the file holds i64 has the wrong file.
#[must_use]
pub fn converts(stored: CandleDType, requested: CandleDType) -> bool {
    stored == requested || (stored.is_float() && requested.is_float())
}
