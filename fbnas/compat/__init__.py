"""Compatibility layers for users moving to fbnas from other libraries.

``from fbnas.compat import mobile_cv as mbuilder`` speaks mobile-vision's FBNet builder API.
"""
