"""Jetson platform support (planned: JetPack/L4T detection, nvpmodel/jetson_clocks state, presets).

Empty for now; the top-level ``jetson/`` folder will hold scripts that run on the device.
"""
