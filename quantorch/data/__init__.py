"""Market data: providers, calendar, validation, panels."""
