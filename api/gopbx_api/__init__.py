"""The GoPBX control-plane API."""
