"""L7 in the node proxy: HTTP/1 handling per request, and authorization of each request."""
