module uvs

go 1.26
