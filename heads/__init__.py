"""Anomaly Heatmap Decoder (AHD) and Region-aware Anomaly Encoder (RAE): plain torch modules, no transformers import."""
