"""Vitis HLS backend: C++ project generation (``writer``) and g++ C-simulation (``project``)."""
