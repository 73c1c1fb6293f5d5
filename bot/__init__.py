"""veilig-doorverwijzen: refer families from Kind en Gezin to the OCMW under a signed protocol."""
