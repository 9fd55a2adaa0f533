"""FBNetV3 JointNAS: architecture + training-recipe search with an accuracy predictor."""
