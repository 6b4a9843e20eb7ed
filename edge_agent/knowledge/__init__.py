"""What the device knows beyond its model: the sentence encoder, ONNX specialists, the
semantic answer cache and the outcome memory behind pre-route."""
