module authgate.test/upstream

go 1.22
