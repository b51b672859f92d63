"""Operations: the health and metrics endpoints of the long-running components, and
`fundwatch status`, which finds them and reads them."""
