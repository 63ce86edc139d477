"""Backends behind one seam: what runs the model's forward pass (torch, ONNX Runtime, OpenVINO), the graph
cache and export, the precision modes and this CPU's verdicts on them."""
