"""Using a trained model: ``Predictor``, batch prediction into COCO results files, and
TorchScript / ONNX export checked against eager."""
