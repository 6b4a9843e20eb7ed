"""Generated from protos/ by tools/genproto.py. Do not edit."""
