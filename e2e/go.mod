module github.com/gatehouse/gatehouse/e2e

go 1.26.0
