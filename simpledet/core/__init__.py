"""Box arithmetic shared by the data pipeline, the heads and the ops' NumPy references."""
