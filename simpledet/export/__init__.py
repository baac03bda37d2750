"""Export of trained detectors to other runtimes (ONNX: simpledet.export.onnx_export)."""
