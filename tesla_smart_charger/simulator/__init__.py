"""Simulated devices (meter, car, token endpoint, house) served over real HTTP on loopback."""
