"""Weights: safe checkpoint loading, the official-to-mgld key conversion, SD 2.1 initialisation, the hub."""
