"""Files VoxelFM writes or trusts: atomic writes, sha256 checks, probe file names, cache locations."""
