"""The endpoints: ``legacy`` (the old Flask API's shape) and ``analyses`` (v1)."""
