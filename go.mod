module paddock.dev/paddock

go 1.26.8
