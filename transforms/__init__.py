"""Pipeline stages: validate, parse, map, sink. Each stage is a pure function plus a thin Beam wrapper."""
