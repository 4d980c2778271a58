"""Trained models in and out: the model file (``save_model``, ``load_model``) and
ONNX export."""
