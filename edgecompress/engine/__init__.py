"""Target profiles, memory plans and TensorRT engine builds."""
