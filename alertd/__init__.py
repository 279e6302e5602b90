"""alertd: email alerts for UK Parliament written questions."""

__version__ = "0.1.0"
