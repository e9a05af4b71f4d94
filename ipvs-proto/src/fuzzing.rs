//! Entry points for fuzz targets (stub: being written).
