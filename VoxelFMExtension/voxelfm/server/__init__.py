"""`voxelfm serve`: the VoxelFM server (the ``[server]`` extra: FastAPI + uvicorn).

app (endpoints), models (typed HTTP bodies), store (content-addressed volumes), jobs (one queue per device),
auth (API keys), capabilities (the core pipelines a job runs), config (limits and folders).
"""
