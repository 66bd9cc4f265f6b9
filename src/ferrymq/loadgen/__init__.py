"""``ferrymq bench``: a multi-process MQTT load generator usable against any broker."""
