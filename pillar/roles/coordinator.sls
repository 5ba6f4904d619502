roles: [coordinator]
