"""Files VoxelFM reads, writes or trusts: atomic writes, sha256 checks, probe files, manifests, cache locations."""
