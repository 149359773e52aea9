"""The pure core: records, money, MRR maths, statuses, cursor maths. No I/O is imported here."""
