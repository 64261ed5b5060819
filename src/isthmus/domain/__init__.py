"""Pure types and rules: no FastAPI, SQLAlchemy or aiohttp imports here."""
