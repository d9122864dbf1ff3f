"""What satool writes for people to read: tables (CSV and JSON with one NaN policy), figures, the report."""
