"""Keeping results: objects (S3 or a local folder), the database engine, the ORM, history queries and migrations."""
