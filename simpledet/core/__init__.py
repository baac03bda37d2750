"""Shared pieces: box arithmetic and anchors (data pipeline, heads, the ops' NumPy references)
and the precision names with the devices that can run them."""
