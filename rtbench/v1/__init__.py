"""Generated from proto/rtbench/v1 by scripts/gen-proto. Do not edit."""
