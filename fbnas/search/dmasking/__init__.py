"""FBNetV2 DMaskingNAS: channel, expansion, kernel and resolution search by masking."""
