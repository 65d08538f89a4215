"""The shops' reports in ClickHouse (``shop_reports``): schema, report rows and the analytics queries."""
